"""The bound a PRM score's cost sets on spec: the ratio per prefix and where pooling stops paying."""

from benchmarks.prm_cost import bound_rows


def test_the_bound_puts_the_draft_and_the_score_against_the_big_model_s_step():
    # A 10-token step: big writes it in 400 ms, small drafts it in 40 ms; pooling costs
    # 20 ms + 0.2 ms a prefix token, so it reaches 360 ms (ratio 1) at 1700 tokens, 240 ms (0.7) at 1100.
    costs = {
        100: {"pooling": 40.0, "tag_token": 20.0, "judge": 100.0},
        1600: {"pooling": 340.0, "tag_token": 25.0, "judge": 110.0},
    }
    rows = bound_rows(costs, {"big": 40.0, "small": 4.0}, 10)
    assert rows[0] == "a 10-token step: big writes it in 400 ms, small drafts it in 40 ms"
    assert rows[1] == "prefix 100: spec step / big step, every draft kept: pooling 0.20x, tag_token 0.15x, judge 0.35x"
    assert "pooling 0.95x" in rows[2]
    assert rows[3].endswith("no faster than big past 1700 prefix tokens, misses 0.7x past 1100")
