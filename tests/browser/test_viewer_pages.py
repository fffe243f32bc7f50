"""The viewer file opened from disk in Chromium: each page kind shows what its records say, the
problem table filters and sorts, two runs list exactly their disagreements, and model text that
is markup stays text. Screenshots of each page kind go to tests/output/viewer/."""

from pathlib import Path

import pytest

from benchmarks import viewer_runs
from evaluators import view


@pytest.fixture(scope="module")
def viewers(tmp_path_factory) -> dict[str, Path]:
    """One viewer file per kind of run, and one of two spec runs compared."""
    base = tmp_path_factory.mktemp("viewer-runs")
    folders = {
        "spec": viewer_runs.spec_run(base / "spec"),
        "flipped": viewer_runs.spec_run(base / "flipped", flip=True),
        "split": viewer_runs.split_run(base / "split"),
        "search": viewer_runs.search_run(base / "search"),
        "rast": viewer_runs.rast_run(base / "rast"),
    }
    files = {}
    for name in ("spec", "split", "search", "rast"):
        files[name] = base / f"{name}.html"
        assert view.main([str(folders[name]), "--out", str(files[name])]) == 0
    files["compare"] = base / "compare.html"
    assert view.main([str(folders["spec"]), str(folders["flipped"]), "--out", str(files["compare"])]) == 0
    return files


def rows(page) -> list[str]:
    return page.page.locator("#problems tbody tr td:nth-child(2)").all_text_contents()


def test_the_run_page_loads_clean_and_its_table_filters_sorts_and_searches(page, viewers):
    page.open(viewers["spec"])
    assert page.page.locator("#accuracy").text_content() == "50.0%"
    assert page.page.locator("#config").get_by_text("--tracks").count() == 1  # differs from spec_scale's 3
    assert page.page.locator("svg.plot").count() == 3
    page.shot("run-page")
    assert rows(page) == ["p0", "p1", "p2", "p3"]
    for status, expected in [("wrong", ["p1"]), ("none", ["p2"]), ("es", ["p0"]), ("failed", ["p1"])]:
        page.page.select_option("#filter", status)
        assert rows(page) == expected, status
    page.page.select_option("#filter", "all")
    page.page.fill("#search", "3 + 4")
    assert rows(page) == ["p1"] and page.page.locator("#count").text_content() == "showing 1 of 4"
    page.page.fill("#search", "")
    page.page.click("th[data-key=lat]")
    assert rows(page) == ["p2", "p0", "p3", "p1"]  # 1, 3, 5, 9 seconds
    page.page.click("th[data-key=lat]")
    assert rows(page) == ["p1", "p3", "p0", "p2"]
    page.page.click("th[data-key=tok]")
    assert rows(page) == ["p2", "p1", "p3", "p0"]  # 30, 34, 37, 39 tokens
    page.page.click("#problems tbody tr >> nth=3")  # p0: a row opens its problem page
    page.page.wait_for_selector("#problem-page")
    assert page.page.locator("#problem-page h1").text_content().startswith("Problem p0")
    assert page.errors == [] and page.requests == []


def test_a_step_track_page_shows_each_step_by_writer_with_drafts_votes_and_stops(page, viewers):
    page.open(viewers["spec"], "run=0&p=0")
    tracks = page.page.locator(".track")
    assert tracks.count() == 3
    first = tracks.nth(0).locator(".step")
    assert [first.nth(i).get_attribute("data-writer") for i in range(first.count())] == ["small", "big", "big"]
    assert [first.nth(i).get_attribute("data-outcome") for i in range(3)] == ["accepted", "rewritten", "taken_over"]
    assert first.nth(1).locator(".draft-text").text_content() == "wrong draft 1"
    assert "score 2.0" in first.nth(1).text_content()
    assert tracks.nth(2).locator(".end").text_content() == "■ cancelled by early stop"
    vote = page.page.locator("#vote").text_content()
    assert "Early stop" in vote and "cancelled tracks 2" in vote
    ledger = page.page.locator("#ledger").text_content()
    assert "request-s in" in ledger and "small:8000 busy" in ledger and "60.0% of prompt tokens cached" in ledger
    page.shot("problem-steps")
    page.open(viewers["spec"], "run=0&p=1")
    assert page.page.locator(".track .error").text_content() == "ServerError: big model at http://x returned 500 <boom>"
    assert page.errors == [] and page.requests == []


def test_model_text_that_is_markup_shows_as_text_and_runs_nothing(page, viewers):
    page.open(viewers["spec"])
    assert page.page.locator("#config").get_by_text("big-model <b>", exact=True).count() == 1
    assert page.page.evaluate("window.__xss") is None
    page.open(viewers["spec"], "run=0&p=3")
    assert page.page.evaluate("window.__xss") is None
    texts = page.page.locator(".track .step .text").all_text_contents()
    assert texts[: len(viewer_runs.HOSTILE)] == viewer_runs.HOSTILE
    assert page.page.locator(".question").text_content() == viewer_runs.HOSTILE_QUESTION
    assert page.page.locator("#evil, img, iframe, main svg").count() == 0
    assert page.page.locator("script").count() == 3  # the data, the traces, the page's script
    page.shot("problem-hostile-text")
    assert page.dialogs == [] and page.errors == [] and page.requests == []


def test_a_splitreason_page_marks_the_text_by_writer_and_why_spans_ended(page, viewers):
    page.open(viewers["split"], "run=0&p=0")
    spans = page.page.locator(".track-text .span.step")
    assert [spans.nth(i).get_attribute("data-writer") for i in range(spans.count())] == ["small", "big", "small"]
    assert page.page.locator(".span-end").all_text_contents() == ["big span ended: probe"]
    assert page.page.locator("table.rounds tr").count() == 2  # the header and one round
    page.shot("problem-split")
    assert page.errors == []


def test_a_search_page_draws_the_tree_of_completions_and_the_picks(page, viewers):
    page.open(viewers["search"], "run=0&p=0")
    assert page.page.locator(".tree > ul > li > .node").count() == 2  # two first steps shared by two each
    assert page.page.locator(".leaf").count() == 4
    picked = page.page.locator(".leaf.picked")
    assert [picked.nth(i).get_attribute("data-completion") for i in range(picked.count())] == ["0", "3"]
    assert "naive pick" in page.page.locator(".leaf[data-completion='3']").text_content()
    assert "written before searches recorded the beams they prune" in page.page.locator(".card .note").text_content()
    page.shot("problem-search")
    assert page.errors == []


def test_a_search_page_greys_the_beams_the_search_pruned_labelled_with_their_iteration(page, viewers):
    page.open(viewers["search"], "run=0&p=1")
    tree = page.page.locator(".tree")
    pruned = tree.locator(".leaf.pruned")
    # One ✂ line per pruned beam; each ends a greyed step only pruned beams went through.
    assert pruned.count() == len(viewer_runs.PRUNED) == 4
    assert tree.locator(".node.step.pruned").count() == 4
    at = sorted(pruned.nth(i).get_attribute("data-iteration") for i in range(pruned.count()))
    assert at == ["1", "1", "2", "3"]  # iterations from 1, as the page shows them
    wrong = tree.locator(".node.step.pruned", has_text="x is 3.")
    assert "step 2 · score 0.100" in wrong.text_content()
    assert "pruned at iteration 2: it scored lower" in wrong.locator("xpath=..").text_content()
    assert "dropped after completing at iteration 3" in pruned.filter(has_text="n completions kept").text_content()
    # The selected completion (naive: the top score) and the steps that lead to it, outlined.
    assert tree.locator(".leaf.chosen").get_attribute("data-completion") == "2"
    chosen = tree.locator(".node.step.chosen .text").all_text_contents()
    assert chosen == ["Add 2 and 2.\n\n", "2 + 2 = 4.\n\n", "\\boxed{4}"]
    assert "4 completions, 4 beams pruned" in page.page.locator(".card h3").nth(1).text_content()
    # A pruned step's text is text, never markup.
    assert tree.locator(".node.step.pruned .text", has_text="<img").count() == 1
    assert page.page.locator("main img").count() == 0 and page.page.evaluate("window.__xss") is None
    page.shot("problem-search-pruned")
    page.page.uncheck("#show-pruned")
    assert pruned.first.is_hidden() and tree.locator(".leaf:not(.pruned)").count() == 4
    assert page.errors == [] and page.dialogs == [] and page.requests == []


def test_a_rast_page_shows_acceptance_per_chunk(page, viewers):
    page.open(viewers["rast"], "run=0&p=0")
    assert page.page.locator(".chunks span").count() == 3
    assert "75.0%" in page.page.locator("#rast").text_content()
    page.shot("problem-rast")
    assert page.errors == []


def test_two_runs_list_exactly_their_disagreements_and_show_both_traces(page, viewers):
    page.open(viewers["compare"], "cmp")
    listed = page.page.locator("#disagreements tbody tr")
    assert [listed.nth(i).get_attribute("data-problem") for i in range(listed.count())] == ["p0", "p1"]
    page.shot("compare")
    listed.nth(1).click()
    page.page.wait_for_selector("#compare-pair")
    sides = page.page.locator("#compare-pair .problem")
    assert sides.count() == 2
    assert [sides.nth(i).locator("h1 .badge").text_content() for i in range(2)] == ["wrong", "right"]
    page.shot("compare-pair")
    assert page.errors == [] and page.requests == []
