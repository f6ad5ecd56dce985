//! Fixed cases for every sentence rule, checked on whole texts and on texts streamed one
//! character at a time.

use aligner_data::segment::{StreamingSegmenter, first_sentence_end, sentences, split_sentences};

/// The pieces of `text`, after checking that they put it back together and that streaming it
/// one character at a time gives the same pieces.
fn pieces(text: &str) -> Vec<&str> {
    let whole: Vec<&str> = sentences(text).collect();
    assert_eq!(whole.concat(), text, "not lossless");
    let mut segmenter = StreamingSegmenter::new();
    let mut streamed: Vec<String> = Vec::new();
    let mut buf = [0; 4];
    for c in text.chars() {
        streamed.extend(segmenter.push(c.encode_utf8(&mut buf)).map(str::to_owned));
    }
    streamed.extend(segmenter.finish().map(str::to_owned));
    assert_eq!(streamed, whole, "streaming differs for {text:?}");
    whole
}

/// Asserts that `text` is one sentence.
fn whole(text: &str) {
    assert_eq!(pieces(text), [text]);
}

// The failures of the reference rule (seed facts, section 5).

#[test]
fn ellipsis_before_lowercase_stays_whole() {
    whole("Wait... what?");
    whole("Wait… what?");
}

#[test]
fn ellipsis_run_ends_a_sentence_as_a_whole() {
    assert_eq!(pieces("Wait... What? No."), ["Wait... ", "What? ", "No."]);
    assert_eq!(pieces("Hmm… OK."), ["Hmm… ", "OK."]);
    whole("Wait . . . what");
}

#[test]
fn text_without_final_punctuation_is_kept() {
    assert_eq!(pieces("Done. And then"), ["Done. ", "And then"]);
    whole("no punctuation at all");
}

#[test]
fn newlines_are_kept() {
    assert_eq!(pieces("One.\nTwo.\n"), ["One.\n", "Two.\n"]);
    assert_eq!(pieces("One.\r\n\r\nTwo."), ["One.\r\n\r\n", "Two."]);
}

#[test]
fn reference_protections_still_hold() {
    assert_eq!(
        pieces("Use a fruit, e.g. an apple. Or not."),
        ["Use a fruit, e.g. an apple. ", "Or not."]
    );
    whole("That is, i.e. Nothing changes.");
    whole("Pi is 3.14159 or so.");
}

// Terminators.

#[test]
fn basic_terminators() {
    assert_eq!(
        pieces("Hi. How are you? Great!"),
        ["Hi. ", "How are you? ", "Great!"]
    );
}

#[test]
fn runs_of_marks_end_only_as_a_whole() {
    assert_eq!(pieces("Really?! Yes!!! Ok"), ["Really?! ", "Yes!!! ", "Ok"]);
    assert_eq!(pieces("What?!?\n\nNext"), ["What?!?\n\n", "Next"]);
}

#[test]
fn trailing_whitespace_belongs_to_the_sentence() {
    assert_eq!(pieces("One.   Two.  "), ["One.   ", "Two.  "]);
    assert_eq!(pieces("One. \n  Two."), ["One. \n", "  Two."]);
}

#[test]
fn leading_whitespace_joins_the_first_sentence() {
    assert_eq!(pieces("\n\n  Hello. World"), ["\n\n  Hello. ", "World"]);
    whole("  \n \n ");
}

#[test]
fn lowercase_or_punctuation_after_a_terminator_continues() {
    whole("He paused. then went on.");
    whole("\"Hi!\" he said.");
    whole("Is it? , no");
}

// Numbers.

#[test]
fn decimals_and_separators_are_not_boundaries() {
    whole("It costs 1,000.5 dollars and v1.2.3 is out.");
    whole("Pi is 3.14 and e is 2.718.");
    assert_eq!(
        pieces("It happened in 2019. Then it ended."),
        ["It happened in 2019. ", "Then it ended."]
    );
    assert_eq!(
        pieces("The answer is 4. This is because 2+2=4."),
        ["The answer is 4. ", "This is because 2+2=4."]
    );
    assert_eq!(pieces("So x = 3.5. Done"), ["So x = 3.5. ", "Done"]);
}

#[test]
fn number_opening_a_piece_is_a_list_number() {
    assert_eq!(pieces("Ok. 2. Then bake."), ["Ok. ", "2. Then bake."]);
}

// Abbreviations.

#[test]
fn titles_never_end_a_sentence() {
    for text in [
        "Mr. Smith met Mrs. Jones.",
        "Ms. Lee and Dr. Who came.",
        "Prof. X lives on St. James street.",
        "We met J. R. R. Tolkien.",
    ] {
        whole(text);
    }
}

#[test]
fn latin_and_initialisms() {
    whole("Cats vs. Dogs is a film.");
    whole("The U.S. Army is big.");
    whole("Smith et al. (2020) showed it.");
    whole("Meet at 9 a.m. tomorrow and leave at 5 p.m. sharp.");
    whole("Bring apples, pears, etc. and some bread.");
}

#[test]
fn etc_and_times_end_a_sentence_before_a_capital() {
    assert_eq!(
        pieces("Apples, pears, etc. Then bread."),
        ["Apples, pears, etc. ", "Then bread."]
    );
    assert_eq!(
        pieces("I woke at 7 a.m. Then I ate."),
        ["I woke at 7 a.m. ", "Then I ate."]
    );
    assert_eq!(pieces("We sell fruit, etc."), ["We sell fruit, etc."]);
}

#[test]
fn number_prefixes() {
    whole("See Fig. 3 and No. 5 on p. 12.");
    assert_eq!(
        pieces("Is it? No. It is not."),
        ["Is it? ", "No. ", "It is not."]
    );
}

#[test]
fn a_capital_after_a_symbol_is_no_initial() {
    assert_eq!(
        pieces("Bake at 180 °C. Then cool."),
        ["Bake at 180 °C. ", "Then cool."]
    );
    assert_eq!(
        pieces("We chose Type-A. Then we left."),
        ["We chose Type-A. ", "Then we left."]
    );
    whole("Ask (J. Smith) first.");
}

#[test]
fn ms_as_a_unit_is_not_a_title() {
    assert_eq!(
        pieces("It took 10 ms. Then it stopped."),
        ["It took 10 ms. ", "Then it stopped."]
    );
    assert_eq!(
        pieces("So am I. Then we left."),
        ["So am I. ", "Then we left."]
    );
}

// Quotes and brackets.

#[test]
fn closers_stay_with_their_sentence() {
    assert_eq!(
        pieces("He said \"Hi.\" Then he left."),
        ["He said \"Hi.\" ", "Then he left."]
    );
    assert_eq!(pieces("(See above.) Next."), ["(See above.) ", "Next."]);
    assert_eq!(pieces("**Note.** Read it."), ["**Note.** ", "Read it."]);
    assert_eq!(
        pieces("She asked “Why?” Nobody knew."),
        ["She asked “Why?” ", "Nobody knew."]
    );
}

// URLs, emails, file names.

#[test]
fn dotted_names_are_not_boundaries() {
    assert_eq!(
        pieces("Visit https://example.com/a?b=1. Then mail a.b@c.org. Open main.rs now."),
        [
            "Visit https://example.com/a?b=1. ",
            "Then mail a.b@c.org. ",
            "Open main.rs now."
        ]
    );
    whole("Go to example.com for more.");
}

// Lists and paragraphs.

#[test]
fn paragraph_breaks_are_boundaries() {
    assert_eq!(
        pieces("No stop here\n\nNew paragraph"),
        ["No stop here\n\n", "New paragraph"]
    );
    assert_eq!(pieces("A\n \t\nB"), ["A\n \t\n", "B"]);
    whole("A single\nnewline is no boundary");
}

#[test]
fn list_items_are_boundaries() {
    assert_eq!(
        pieces("Steps:\n1. Mix the flour.\n2. Bake at 180 °C.\n10) Eat"),
        [
            "Steps:\n",
            "1. Mix the flour.\n",
            "2. Bake at 180 °C.\n",
            "10) Eat"
        ]
    );
    assert_eq!(
        pieces("You need\n- flour\n* sugar\n+ eggs\n• milk"),
        ["You need\n", "- flour\n", "* sugar\n", "+ eggs\n", "• milk"]
    );
    assert_eq!(
        pieces("Pick one:\nA. Paris\nb) Rome"),
        ["Pick one:\n", "A. Paris\n", "b) Rome"]
    );
}

#[test]
fn list_numbers_are_not_sentence_ends() {
    whole("1. Mix");
    whole("1. e.g. this");
    assert_eq!(
        pieces("1. Mix it. Then bake."),
        ["1. Mix it. ", "Then bake."]
    );
}

#[test]
fn nested_items_keep_their_indentation() {
    assert_eq!(
        pieces("- fruit\n  - apple\n  - pear"),
        ["- fruit\n", "  - apple\n", "  - pear"]
    );
}

#[test]
fn list_continuation_lines_are_not_boundaries() {
    assert_eq!(
        pieces("- an item\n  that goes on\n- next"),
        ["- an item\n  that goes on\n", "- next"]
    );
    whole("*emphasis* starts\n**this** line");
}

#[test]
fn headings_and_tables_are_whole_lines() {
    assert_eq!(
        pieces("# Title\nText. More.\n## 1. Setup v. 2\nok"),
        ["# Title\n", "Text. ", "More.\n", "## 1. Setup v. 2\n", "ok"]
    );
    assert_eq!(
        pieces("| a. B | c |\n|---|---|\n| 1. X | 2 |\nAfter."),
        ["| a. B | c |\n", "|---|---|\n", "| 1. X | 2 |\n", "After."]
    );
    whole("#hashtag. no heading");
}

// Code.

#[test]
fn code_fences_are_unbreakable() {
    let text = "Run this:\n```python\nx = 1. \n\nprint(x). Done\n```\nThen check.";
    assert_eq!(
        pieces(text),
        [
            "Run this:\n",
            "```python\nx = 1. \n\nprint(x). Done\n```\n",
            "Then check."
        ]
    );
    assert_eq!(pieces("~~~\na. B\n~~~~\nok"), ["~~~\na. B\n~~~~\n", "ok"]);
    assert_eq!(
        pieces("Hi.\n```\nUnclosed. Fence\n\nStill code."),
        ["Hi.\n", "```\nUnclosed. Fence\n\nStill code."]
    );
}

#[test]
fn a_shorter_fence_does_not_close() {
    whole("````\n```\nStill. Code\n");
}

#[test]
fn inline_code_is_unbreakable() {
    assert_eq!(
        pieces("Call `a.b(). Next` first. Then `x`. Done"),
        ["Call `a.b(). Next` first. ", "Then `x`. ", "Done"]
    );
    whole("Use ``a ` b. C`` here.");
}

#[test]
fn unmatched_backtick_is_plain_text() {
    assert_eq!(pieces("A ` tick. Then more."), ["A ` tick. ", "Then more."]);
    assert_eq!(
        pieces("A `tick\nover lines`. Then"),
        ["A `tick\nover lines`. ", "Then"]
    );
}

// CJK.

#[test]
fn cjk_terminators_need_no_space() {
    assert_eq!(
        pieces("你好。世界！真的？是的"),
        ["你好。", "世界！", "真的？", "是的"]
    );
    assert_eq!(
        pieces("他说：「你好。」然后走了。"),
        ["他说：「你好。」", "然后走了。"]
    );
    assert_eq!(
        pieces("これはペンです。 あれは本です。"),
        ["これはペンです。 ", "あれは本です。"]
    );
    assert_eq!(pieces("Hello.你好"), ["Hello.", "你好"]);
}

// The limits the module documents.

#[test]
fn documented_limits() {
    whole("She lives in the U.S. He left.");
    whole("It was Plan B. Then it failed.");
    whole("He stopped. then he went on.");
    assert_eq!(
        pieces("Steps: 1. Mix 2. Bake"),
        ["Steps: 1. ", "Mix 2. ", "Bake"]
    );
    assert_eq!(
        pieces("It wraps at\n1. point"),
        ["It wraps at\n", "1. point"]
    );
    whole("> A quote\n> goes on");
    whole("Paragraph\r\rNext");
}

// Streaming.

#[test]
fn a_decimal_is_held_until_the_next_character() {
    let mut segmenter = StreamingSegmenter::new();
    assert_eq!(segmenter.push("Pi is 3.").count(), 0);
    assert_eq!(segmenter.push("14").count(), 0);
    assert_eq!(segmenter.pending(), "Pi is 3.14");
    assert_eq!(segmenter.finish().collect::<Vec<_>>(), ["Pi is 3.14"]);
}

#[test]
fn a_terminator_is_held_until_a_non_space_arrives() {
    let mut segmenter = StreamingSegmenter::new();
    assert_eq!(segmenter.push("Hello.").count(), 0);
    assert_eq!(segmenter.push(" \n ").count(), 0);
    assert_eq!(segmenter.push("Wor").collect::<Vec<_>>(), ["Hello. \n"]);
    assert_eq!(segmenter.pending(), " Wor");
}

#[test]
fn finish_flushes_and_resets() {
    let mut segmenter = StreamingSegmenter::new();
    assert_eq!(
        segmenter.push("One. Two. Thr").collect::<Vec<_>>(),
        ["One. ", "Two. "]
    );
    assert_eq!(segmenter.finish().collect::<Vec<_>>(), ["Thr"]);
    assert_eq!(segmenter.finish().count(), 0);
    assert_eq!(segmenter.push("Again. A").collect::<Vec<_>>(), ["Again. "]);
}

#[test]
fn continuing_knows_whether_a_line_starts() {
    let mut mid_line = StreamingSegmenter::continuing("Intro. ");
    mid_line.push("# not a heading. Next");
    assert_eq!(mid_line.pending(), "Next");
    let mut new_line = StreamingSegmenter::continuing("Intro:\n");
    new_line.push("# a heading. Next");
    assert_eq!(new_line.pending(), "# a heading. Next");
}

#[test]
fn first_sentence_end_waits_for_certainty() {
    assert_eq!(first_sentence_end(""), None);
    assert_eq!(first_sentence_end("Hello."), None);
    assert_eq!(first_sentence_end("Hello. "), None);
    assert_eq!(first_sentence_end("Hello. W"), Some(7));
    assert_eq!(first_sentence_end("Wait... w"), None);
    assert_eq!(first_sentence_end("Mr. Smith said hi. Th"), Some(19));
    assert_eq!(first_sentence_end("你好。世"), Some(9));
    assert_eq!(first_sentence_end("List:\n-"), None);
    assert_eq!(first_sentence_end("List:\n- a"), Some(6));
}

#[test]
fn spans_index_the_original_text() {
    let text = "Ça va? Très bien. 你好。";
    let spans = split_sentences(text);
    assert_eq!(spans, [0..8, 8..20, 20..29]);
    assert!(
        spans
            .iter()
            .all(|s| text.is_char_boundary(s.start) && text.is_char_boundary(s.end))
    );
    assert!(split_sentences("").is_empty());
}
