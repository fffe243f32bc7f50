"""The trace viewer: a run's records as one self-contained HTML file (`python -m evaluators.view`).

`payload` turns graded records into the compact JSON the page reads, `settings` finds the flags a
run set away from its runner's (the seed's) defaults, `plots` draws the run page's small SVG plots,
`page` puts data, plots, script and style into one file. The page's script (`viewer.js`, and
`search_view.js` for the tree of a search's beams) builds every element that holds model or data
set text with `textContent`, never as markup.
"""
