"""The token- and text-level built-in validators on hand-built blocks: what must fire and what must not."""

from __future__ import annotations

import dataclasses

import pytest

from diffgemma_engine.api.validation import Severity
from diffgemma_plugins.testing import make_block, run_validator, toy_tokenize
from diffgemma_plugins.validators import (
    BoundaryDuplication,
    DegenerateBlock,
    PrematureEos,
    RepeatedNgram,
    SpecialTokenLeak,
    Stutter,
    UnconvergedBlock,
    Utf8Integrity,
)


def span_text(block, span):
    start, end = span
    return block.text[block.token_offsets[start][0] : block.token_offsets[end - 1][1]]


# ---- special_token_leak ----------------------------------------------------------------------------


def test_special_token_text_is_flagged_at_its_tokens():
    block = make_block("The answer is 42.<end_of_turn> Thanks")
    [violation] = run_validator(SpecialTokenLeak(), block)
    assert violation.code == "special_token_leak"
    assert violation.severity is Severity.ERROR
    assert "<end_of_turn>" in "".join(span_text(block, s) for s in violation.spans)
    assert "42" not in "".join(span_text(block, s) for s in violation.spans)


def test_pipe_delimited_markers_are_flagged_but_html_is_not():
    assert run_validator(SpecialTokenLeak(), make_block("Sure.<|channel>thought"))
    assert not run_validator(SpecialTokenLeak(), make_block("Use <div> and <span> tags, or <br/>."))


def test_tool_call_markers_are_response_syntax_but_a_made_up_tool_response_is_a_leak():
    call = '<|tool_call>call:get_weather{city:<|"|>Riga<|"|>}<tool_call|>'
    assert not run_validator(SpecialTokenLeak(), make_block(call))
    block = make_block(call + "<|tool_response>response:get_weather{}<tool_response|>")
    [violation] = run_validator(SpecialTokenLeak(), block)
    flagged = "".join(span_text(block, s) for s in violation.spans)
    assert "<|tool_response>" in flagged and "<tool_call|>" not in flagged and violation.severity is Severity.ERROR


def test_special_token_text_inside_code_is_not_flagged():
    text = 'Set the pad token:\n```python\ntokenizer.pad_token = "<pad>"\n```\nor use `<eos>` directly.'
    assert not run_validator(SpecialTokenLeak(), make_block(text))


def test_a_block_of_nothing_but_leaked_tokens_is_fatal():
    [violation] = run_validator(SpecialTokenLeak(), make_block("<pad><pad><pad><pad>"))
    assert violation.severity is Severity.FATAL
    assert not violation.repairable


def test_banned_token_ids_option():
    block = make_block("one two three")
    ids = block.token_ids
    [violation] = run_validator(SpecialTokenLeak(), block, {"token_ids": [ids[1]]})
    assert violation.spans == ((1, 2),)
    with pytest.raises(ValueError, match="token_ids"):
        SpecialTokenLeak().parse_options({"token_ids": "5"})
    with pytest.raises(ValueError, match="unknown options"):
        SpecialTokenLeak().parse_options({"ids": [5]})


# ---- degenerate_block -----------------------------------------------------------------------------


def test_whole_canvas_of_one_token_is_fatal():
    block = make_block(" la" * 32, canvas_length=32)
    [violation] = run_validator(DegenerateBlock(), block)
    assert (violation.code, violation.severity, violation.repairable) == ("collapsed_block", Severity.FATAL, False)


def test_long_same_token_run_is_flagged_keeping_the_first_token():
    text = "It was" + " very" * 20 + " good."
    block = make_block(text)
    violations = {v.code: v for v in run_validator(DegenerateBlock(), block)}
    assert violations["token_run"].spans == ((3, 22),)


def test_short_runs_and_punctuation_rulers_are_not_flagged():
    text = "Results\n" + "=" * 40 + "\n\nIt was very very good. Wait wait wait, what?"
    assert not run_validator(DegenerateBlock(), make_block(text))


def test_newline_flood_is_flagged_but_paragraph_breaks_are_not():
    assert [v.code for v in run_validator(DegenerateBlock(), make_block("End of part one." + "\n" * 9 + "Part two"))] == [
        "newline_flood"
    ]
    assert not run_validator(DegenerateBlock(), make_block("Para one.\n\n\nPara two.\n\nPara three."))


def test_block_that_decodes_to_nothing_without_eos_is_empty():
    blank = make_block("")
    block = dataclasses.replace(blank, token_ids=(0, 3) * 10, token_offsets=((0, 0),) * 20)
    assert [v.code for v in run_validator(DegenerateBlock(), block)] == ["empty_block"]
    assert not run_validator(DegenerateBlock(), dataclasses.replace(block, eos_position=20, is_final=True))


def test_low_diversity_needs_a_long_block():
    looping = " a b c" * 40
    assert "low_diversity" in {v.code for v in run_validator(DegenerateBlock(), make_block(looping))}
    assert not run_validator(DegenerateBlock(), make_block(" a b c" * 5))


# ---- premature_eos ---------------------------------------------------------------------------------


def test_eos_inside_an_open_fence_renoises_from_the_eos_to_the_end_of_the_canvas():
    block = make_block("Here you go:\n```python\nprint('hi')\n", eos=True, canvas_length=64)
    [violation] = run_validator(PrematureEos(), block)
    assert violation.code == "eos_in_code_fence"
    assert violation.spans == ((block.eos_position, 64),)


def test_eos_inside_open_json_and_open_brackets():
    assert [v.code for v in run_validator(PrematureEos(), make_block('{"a": [1, 2', eos=True))] == ["eos_in_open_json"]
    assert [v.code for v in run_validator(PrematureEos(), make_block("The list (as promised", eos=True))] == [
        "eos_with_open_brackets"
    ]


def test_empty_answer_and_min_new_tokens():
    assert [v.code for v in run_validator(PrematureEos(), make_block("", eos=True))] == ["empty_response"]
    short = make_block("Yes.", eos=True)
    assert [v.code for v in run_validator(PrematureEos(), short, {"min_new_tokens": 10})] == ["eos_before_min_tokens"]
    assert not run_validator(PrematureEos(), short)


def test_open_structure_is_looked_up_in_the_committed_text_too():
    block = make_block("3]}", committed='{"a": [1, 2, ', eos=True)
    assert not run_validator(PrematureEos(), block)
    assert run_validator(PrematureEos(), make_block("3]", committed='{"a": [1, 2, ', eos=True))


def test_clean_endings_do_not_fire():
    for text in ("The sky is blue.", "Done :(", '```json\n{"a": 1}\n```', "f(x) = [1, 2] {ok}", "1) first 2) second"):
        assert not run_validator(PrematureEos(), make_block(text, eos=True)), text
    assert not run_validator(PrematureEos(), make_block("(open but no EOS yet"))


# ---- stutter -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("once upon a time in a a land far away", "a"),
        ("courage and and strength", "and"),
        ("The the waves were high", "the"),
        ("we walked in the in the park", "in the"),
        ("a sapphire sapphire ring", "sapphire"),
    ],
)
def test_stutter_fires_on_the_repeat(text, phrase):
    block = make_block(text)
    [violation] = run_validator(Stutter(), block)
    assert violation.code == "stutter"
    assert span_text(block, violation.spans[0]).strip().lower() == phrase


@pytest.mark.parametrize(
    "text",
    [
        "I know that that is true.",
        "She had had enough.",
        "It was very very cold, no no no.",
        "The matrix row is 0 0 1.",
        "the theme, the thesis",
        "Run `echo echo` in a shell.",
        "Is it? It is. Bye, bye.",
        "A line ends with the\nthe next line starts oddly",
    ],
)
def test_stutter_does_not_fire_on_clean_text(text):
    assert not run_validator(Stutter(), make_block(text))


def test_stutter_across_the_block_boundary_points_into_the_block():
    block = make_block(" the waves", committed="They watched the")
    [violation] = run_validator(Stutter(), block)
    assert violation.spans == ((0, 1),)
    assert not run_validator(Stutter(), make_block(" waves", committed="They watched the"))


# ---- repeated_ngram ----------------------------------------------------------------------------------


def test_a_six_word_sequence_three_times_is_flagged_after_the_first():
    sentence = "the model writes the same thing"
    block = make_block(f"{sentence} here, then {sentence} there, and {sentence} again.")
    violations = {v.code: v for v in run_validator(RepeatedNgram(), block)}
    flagged = [span_text(block, s) for s in violations["repeated_ngram"].spans]
    assert [text.strip() for text in flagged] == [sentence, sentence]


def test_a_long_sentence_repeated_from_the_committed_text_is_flagged():
    sentence = "Rayleigh scattering makes short wavelengths spread across the whole sky."
    block = make_block(" " + sentence, committed="Some intro. " + sentence)
    [violation] = run_validator(RepeatedNgram(), block)
    assert violation.code == "repeated_sentence"
    assert span_text(block, violation.spans[0]).strip() == sentence


def test_repetition_only_in_the_committed_text_is_not_this_blocks_fault():
    sentence = "the model writes the same thing"
    committed = f"{sentence}. {sentence}. {sentence}."
    assert not run_validator(RepeatedNgram(), make_block(" A different ending.", committed=committed))


def test_twice_is_not_enough_and_code_is_ignored():
    sentence = "the model writes the same thing"
    assert not run_validator(RepeatedNgram(), make_block(f"{sentence}, and {sentence}."))
    code = "```python\n" + "self.assertEqual(result, expected_value_of_the_thing)\n" * 4 + "```\n"
    assert not run_validator(RepeatedNgram(), make_block(code))


# ---- boundary_duplication --------------------------------------------------------------------------


def test_block_head_restating_the_committed_tail_is_flagged():
    tail = " The quick brown fox jumps over the lazy dog near the river bank."
    block = make_block(tail + " Then it ran home.", committed="A story." + tail)
    [violation] = run_validator(BoundaryDuplication(), block)
    assert violation.code == "boundary_duplication"
    assert violation.spans[0][0] == 0 and violation.spans[0][1] >= 8


def test_boundary_duplication_ignores_short_overlaps_later_repeats_and_code():
    committed = "A story. The quick brown fox jumps over the lazy dog."
    assert not run_validator(BoundaryDuplication(), make_block(" The quick brown fox ran home.", committed=committed))
    late = " Meanwhile, far away, much later, and in another town, the quick brown fox jumps over the lazy dog."
    assert not run_validator(BoundaryDuplication(), make_block(late, committed=committed))
    fenced = "```python\nprint('the quick brown fox jumps over the lazy dog')\n"
    assert not run_validator(BoundaryDuplication(), make_block(fenced[10:], committed=fenced))


# ---- utf8_integrity ---------------------------------------------------------------------------------


def test_replacement_characters_are_flagged_except_a_split_character_at_the_block_end():
    block = make_block("caf\ufffd au lait \ufffd")
    [violation] = run_validator(Utf8Integrity(), block)
    assert violation.code == "replacement_character"
    assert len(violation.spans) == 1 and span_text(block, violation.spans[0]) == "\ufffd"
    final = make_block("caf\ufffd au lait \ufffd", eos=True)
    assert len(run_validator(Utf8Integrity(), final)[0].spans) == 2


def test_control_characters_are_flagged_but_tabs_and_newlines_are_not():
    assert [v.code for v in run_validator(Utf8Integrity(), make_block("bell\x07 here"))] == ["control_character"]
    assert not run_validator(Utf8Integrity(), make_block("tab\there\r\nnew line, naïve café ✓"))


# ---- unconverged_block -------------------------------------------------------------------------------


def test_unconverged_is_a_warning_pointing_at_uncertain_positions():
    entropy = [0.0] * 256
    entropy[2] = 4.0
    [violation] = run_validator(UnconvergedBlock(), make_block("one two three four", converged=False, entropy=entropy))
    assert (violation.code, violation.severity, violation.spans) == ("unconverged", Severity.WARN, ((2, 3),))


def test_strict_makes_it_an_error_and_converged_low_entropy_blocks_pass():
    entropy = [0.0] * 256
    entropy[1] = 3.0
    block = make_block("one two three", entropy=entropy)
    [violation] = run_validator(UnconvergedBlock(), block, {"strict": True})
    assert (violation.code, violation.severity) == ("high_entropy", Severity.ERROR)
    assert not run_validator(UnconvergedBlock(), block, {"entropy_threshold": 3.5})
    assert not run_validator(UnconvergedBlock(), make_block("one two three"))
    with pytest.raises(ValueError):
        UnconvergedBlock().parse_options({"entropy_threshold": -1})


def test_toy_tokenizer_offsets_cover_the_text():
    ids, offsets = toy_tokenize("Hello,  world!\n\nBye")
    assert "".join("Hello,  world!\n\nBye"[s:e] for s, e in offsets) == "Hello,  world!\n\nBye"
    assert len(ids) == len(offsets)
