from toolkit.diff import diff_stats, side_by_side, side_by_side_text, tokens, word_diff


def test_tokens_round_trip_and_split_punctuation():
    text = "Think step-by-step,  then answer:\n(A) or (B)."
    assert "".join(tokens(text)) == text
    assert tokens("a-b, c") == ["a", "-", "b", ",", " ", "c"]


def test_side_by_side_marks_only_the_changed_token():
    a = "Answer the question carefully. Think step by step."
    b = "Answer the question briefly. Think step by step!"
    left, right = side_by_side(a, b)
    assert "".join(t for _, t in left) == a and "".join(t for _, t in right) == b
    assert [t for op, t in left if op != "equal"] == ["carefully", "."]
    assert [t for op, t in right if op != "equal"] == ["briefly", "!"]
    assert {op for op, _ in left if op != "equal"} == {"replace"}
    assert diff_stats(a, b) == {"removed": 2, "added": 2, "unchanged": 8}


def test_insertions_and_deletions_sit_on_one_side_only():
    left, right = side_by_side("think step by step", "think slowly step by step")
    assert all(op == "equal" for op, _ in left)
    assert [t.strip() for op, t in right if op == "insert"] == ["slowly"]
    assert diff_stats("a b c", "a c") == {"removed": 1, "added": 0, "unchanged": 2}


def test_rendered_panes_keep_markup_like_text_literal_and_style_only_changes():
    lt, rt = side_by_side_text("use [bold]A[/bold] here", "use [bold]B[/bold] here")
    assert lt.plain == "use [bold]A[/bold] here" and rt.plain == "use [bold]B[/bold] here"
    assert [rt.plain[s.start:s.end] for s in rt.spans if s.style] == ["B"]
    same_l, same_r = side_by_side_text("same text", "same text")
    assert same_l.plain == same_r.plain == "same text" and not [s for s in same_r.spans if s.style]
    assert word_diff("a b", "a c") == [("equal", "a"), ("delete", "b"), ("insert", "c")]
