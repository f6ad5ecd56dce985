//! The state machine driven by scripted fakes: no model involved.

use proptest::prelude::*;

use super::*;
use crate::segment::split_sentences;

/// An upstream that writes a fixed answer, one char per token, and models a KV cache: it keeps
/// the text it has "forwarded", re-feeds only what differs from the accepted text and counts it.
#[derive(Debug, Default)]
struct FakeLm {
    pieces: Vec<String>,
    next: usize,
    /// Chars of the current piece already handed out (a token cap cut it).
    offset: usize,
    eos_at_end: bool,
    cache: String,
    fed: usize,
    truncations: Vec<usize>,
    caps: Vec<usize>,
}

impl FakeLm {
    fn new(script: &str, eos_at_end: bool) -> Self {
        Self {
            pieces: split_sentences(script)
                .into_iter()
                .map(|r| script[r].to_owned())
                .collect(),
            eos_at_end,
            ..Self::default()
        }
    }
}

impl Upstream for FakeLm {
    fn draft_conversation(
        &mut self,
        conversation: &Conversation,
        accepted: &str,
        max_tokens: usize,
        _cancel: Option<&AtomicBool>,
    ) -> Result<Draft> {
        conversation.require_single()?;
        self.caps.push(max_tokens);
        let common = self
            .cache
            .char_indices()
            .zip(accepted.chars())
            .find(|((_, a), b)| a != b)
            .map_or(self.cache.len().min(accepted.len()), |((i, _), _)| i);
        if common < self.cache.len() {
            self.truncations.push(common);
            self.cache.truncate(common);
        }
        self.fed += accepted.len() - common;
        self.cache.push_str(&accepted[common..]);
        let Some(piece) = self.pieces.get(self.next) else {
            let stop = if self.eos_at_end {
                DraftStop::Eos
            } else {
                DraftStop::Sentence
            };
            return Ok(Draft {
                text: String::new(),
                tokens: 0,
                stop,
            });
        };
        let rest: String = piece.chars().skip(self.offset).collect();
        let n = rest.chars().count();
        let (text, stop) = if n > max_tokens {
            self.offset += max_tokens;
            (rest.chars().take(max_tokens).collect(), DraftStop::TokenCap)
        } else {
            self.next += 1;
            self.offset = 0;
            let last = self.next == self.pieces.len();
            (
                rest,
                if last && self.eos_at_end {
                    DraftStop::Eos
                } else {
                    DraftStop::Sentence
                },
            )
        };
        let tokens = text.chars().count();
        self.fed += text.len();
        self.cache.push_str(&text);
        Ok(Draft { text, tokens, stop })
    }
}

/// Writes the same sentence forever.
struct Endless;

impl Upstream for Endless {
    fn draft_conversation(
        &mut self,
        conversation: &Conversation,
        _accepted: &str,
        max_tokens: usize,
        _cancel: Option<&AtomicBool>,
    ) -> Result<Draft> {
        conversation.require_single()?;
        Ok(Draft {
            text: "Blah. ".into(),
            tokens: 6.min(max_tokens),
            stop: DraftStop::Sentence,
        })
    }
}

/// Replaces text and pads the result with whitespace of its own, which must not leak.
struct Replace(&'static str, &'static str);

impl Corrector for Replace {
    fn correct(&mut self, _q: &str, _prefix: &str, last: &str) -> Result<Correction> {
        Ok(Correction {
            text: format!(" {} \n", last.trim().replace(self.0, self.1)),
            tokens: 2,
        })
    }
}

/// Records its calls and answers with the identity.
#[derive(Default)]
struct Spy(Vec<(String, String)>);

impl Corrector for Spy {
    fn correct(&mut self, _q: &str, prefix: &str, last: &str) -> Result<Correction> {
        self.0.push((prefix.to_owned(), last.to_owned()));
        Ok(Correction {
            text: last.to_owned(),
            tokens: 1,
        })
    }
}

fn run(
    upstream: &mut impl Upstream,
    corrector: &mut impl Corrector,
    config: MachineConfig,
) -> (Record, Vec<Event>) {
    let mut machine = StreamMachine::new("Q?", config).unwrap();
    let mut events = Vec::new();
    let record = machine
        .run(upstream, corrector, |e| events.push(e.clone()))
        .unwrap();
    assert!(machine.is_done());
    (record, events)
}

const ANSWER: &str = "# Plan\n\nFirst, mix the flour. Then bake it!\n- one\n  - nested\n\nDone";

#[test]
fn eos_stops_early_and_identity_keeps_the_answer() {
    let mut lm = FakeLm::new("One. Two. Three.", true);
    let (record, events) = run(&mut lm, &mut Identity, MachineConfig::default());
    assert_eq!(record.answer, "One. Two. Three.");
    assert_eq!(record.summary.reason, DoneReason::Eos);
    assert_eq!(record.summary.rounds, 3, "no round after EOS");
    assert_eq!(lm.caps.len(), 3);
    assert!(matches!(events.last(), Some(Event::Done(s)) if s.reason == DoneReason::Eos));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Done(_)))
            .count(),
        1
    );
}

#[test]
fn eos_with_no_text_ends_without_a_round_record() {
    let mut lm = FakeLm::new("One. Two.", false);
    let mut lm2 = FakeLm::new("", true);
    let (record, _) = run(&mut lm2, &mut Identity, MachineConfig::default());
    assert_eq!(record.answer, "");
    assert_eq!(record.summary.reason, DoneReason::Eos);
    assert!(record.rounds.is_empty());
    // Without EOS, an upstream with nothing more to say stalls and the machine stops too.
    let (record, _) = run(&mut lm, &mut Identity, MachineConfig::default());
    assert_eq!(record.answer, "One. Two.");
    assert_eq!(record.summary.reason, DoneReason::Stalled);
}

#[test]
fn limits_terminate_an_endless_upstream() {
    let config = MachineConfig {
        max_rounds: 5,
        ..MachineConfig::default()
    };
    let (record, _) = run(&mut Endless, &mut Identity, config);
    assert_eq!(record.summary.reason, DoneReason::MaxRounds);
    assert_eq!(record.summary.rounds, 5);
    assert_eq!(record.answer, "Blah. ".repeat(5));

    let config = MachineConfig {
        max_total_tokens: 20,
        ..MachineConfig::default()
    };
    let (record, _) = run(&mut Endless, &mut Identity, config);
    assert_eq!(record.summary.reason, DoneReason::MaxTotalTokens);
    assert_eq!(record.summary.upstream_tokens, 20);
    assert_eq!(record.summary.rounds, 4, "6 + 6 + 6 + 2 tokens");
}

#[test]
fn the_upstream_is_never_asked_past_the_budget() {
    let mut lm = FakeLm::new("Aaaaaaaaaa. Bbbbbbbbbb. Cccccccccc.", true);
    let config = MachineConfig {
        max_sentence_tokens: 8,
        max_total_tokens: 25,
        ..MachineConfig::default()
    };
    let (record, _) = run(&mut lm, &mut Identity, config);
    // 8 (cut) + 4, 8 (cut) + 4, then 1 token left.
    assert_eq!(lm.caps, [8, 8, 8, 5, 1]);
    assert_eq!(record.summary.upstream_tokens, 25);
    assert_eq!(record.summary.reason, DoneReason::MaxTotalTokens);
    assert_eq!(record.answer, "Aaaaaaaaaa. Bbbbbbbbbb. C");
    assert_eq!(record.rounds[0].stop, DraftStop::TokenCap);
}

#[test]
fn unterminated_final_text_is_kept() {
    let mut lm = FakeLm::new("It works. But this has no end", true);
    let (record, _) = run(
        &mut lm,
        &mut Replace("end", "ending"),
        MachineConfig::default(),
    );
    assert_eq!(record.answer, "It works. But this has no ending");
    assert_eq!(record.rounds[1].stop, DraftStop::Eos);
}

#[test]
fn spacing_newlines_and_lists_survive_corrections() {
    let mut lm = FakeLm::new(ANSWER, true);
    let (record, _) = run(
        &mut lm,
        &mut Replace("nested", "deeper"),
        MachineConfig::default(),
    );
    assert_eq!(record.answer, ANSWER.replace("nested", "deeper"));
    assert_eq!(record.draft, ANSWER);
    assert_eq!(record.summary.changed, 1);
    let changed: Vec<_> = record.rounds.iter().filter(|r| r.changed).collect();
    assert_eq!(changed[0].last, "  - nested\n\n");
    assert_eq!(changed[0].committed, "  - deeper\n\n");
    assert_eq!(changed[0].correction, "- deeper");
}

#[test]
fn unchanged_corrections_recompute_nothing() {
    let mut lm = FakeLm::new(ANSWER, true);
    let (record, _) = run(&mut lm, &mut Identity, MachineConfig::default());
    assert_eq!(record.answer, ANSWER);
    assert!(lm.truncations.is_empty());
    assert_eq!(lm.fed, ANSWER.len(), "every token forwarded exactly once");
    assert_eq!(record.summary.changed, 0);
}

#[test]
fn a_changed_correction_truncates_to_the_common_prefix() {
    let mut lm = FakeLm::new("Grass is gren. Sky is blue.", true);
    let (record, _) = run(
        &mut lm,
        &mut Replace("gren", "green"),
        MachineConfig::default(),
    );
    assert_eq!(record.answer, "Grass is green. Sky is blue.");
    assert_eq!(lm.truncations, ["Grass is gre".len()]);
    // Everything once, plus the corrected tail of the first sentence ("en. " again, and one more "n").
    assert_eq!(lm.fed, "Grass is gren. Sky is blue.".len() + "en. ".len());
}

#[test]
fn the_corrector_sees_the_accepted_prefix_and_skips_blank_drafts() {
    struct Blank(u8);
    impl Upstream for Blank {
        fn draft_conversation(
            &mut self,
            conversation: &Conversation,
            _a: &str,
            _m: usize,
            _cancel: Option<&AtomicBool>,
        ) -> Result<Draft> {
            conversation.require_single()?;
            self.0 += 1;
            let (text, stop) = match self.0 {
                1 => ("Hi. ", DraftStop::Sentence),
                2 => ("\n\n", DraftStop::Sentence),
                _ => ("Bye.", DraftStop::Eos),
            };
            Ok(Draft {
                text: text.into(),
                tokens: 1,
                stop,
            })
        }
    }
    let mut spy = Spy::default();
    let (record, _) = run(&mut Blank(0), &mut spy, MachineConfig::default());
    assert_eq!(record.answer, "Hi. \n\nBye.");
    assert_eq!(
        spy.0,
        [
            ("".into(), "Hi. ".into()),
            ("Hi. \n\n".into(), "Bye.".into())
        ]
    );
    assert_eq!(record.rounds.len(), 3);
    assert_eq!(record.rounds[1].corrector_tokens, 0);
}

#[test]
fn events_follow_the_transitions() {
    let mut lm = FakeLm::new("A b. C d.", true);
    let mut machine = StreamMachine::new("Q?", MachineConfig::default()).unwrap();
    let mut states = vec![machine.state().clone()];
    let mut kinds = Vec::new();
    while !machine.is_done() {
        let event = machine.step(&mut lm, &mut Replace("d", "e")).unwrap();
        states.push(machine.state().clone());
        kinds.push(event.map(|e| match e {
            Event::Drafted { .. } => "drafted",
            Event::Corrected { changed: true, .. } => "changed",
            Event::Corrected { .. } => "kept",
            Event::Committed(_) => "committed",
            Event::Done(_) => "done",
        }));
    }
    let names: Vec<&str> = states
        .iter()
        .map(|s| match s {
            State::Drafting => "Drafting",
            State::SentenceReady { .. } => "SentenceReady",
            State::Correcting { .. } => "Correcting",
            State::Committed { .. } => "Committed",
            State::Done(_) => "Done",
        })
        .collect();
    assert_eq!(
        names,
        [
            "Drafting",
            "SentenceReady",
            "Correcting",
            "Committed",
            "Drafting",
            "SentenceReady",
            "Correcting",
            "Committed",
            "Done"
        ]
    );
    assert_eq!(
        kinds,
        [
            Some("drafted"),
            None,
            Some("kept"),
            Some("committed"),
            Some("drafted"),
            None,
            Some("changed"),
            Some("committed")
        ]
    );
    assert_eq!(
        machine.step(&mut lm, &mut Identity).unwrap(),
        None,
        "Done is final"
    );
    let s = machine.summary();
    assert_eq!((s.sentences, s.changed, s.rounds), (2, 1, 2));
    assert!(s.first_sentence_ms.is_some());
    assert_eq!(machine.accepted(), "A b. C e.");
}

#[test]
fn errors_leave_the_state_unchanged() {
    struct Flaky(bool);
    impl Corrector for Flaky {
        fn correct(&mut self, _q: &str, _p: &str, last: &str) -> Result<Correction> {
            if std::mem::take(&mut self.0) {
                return Err(Error::Protocol {
                    component: "corrector",
                    reason: "flaky".into(),
                });
            }
            Ok(Correction {
                text: last.into(),
                tokens: 0,
            })
        }
    }
    let mut lm = FakeLm::new("One. Two.", true);
    let mut machine = StreamMachine::new("Q?", MachineConfig::default()).unwrap();
    let mut flaky = Flaky(true);
    let mut events = machine.events(&mut lm, &mut flaky);
    assert!(matches!(events.next(), Some(Ok(Event::Drafted { .. }))));
    assert!(matches!(events.next(), Some(Err(Error::Protocol { .. }))));
    assert!(events.next().is_none(), "the iterator ends after an error");
    assert!(matches!(machine.state(), State::Correcting { .. }));
    let record = machine.run(&mut lm, &mut flaky, |_| {}).unwrap();
    assert_eq!(record.answer, "One. Two.");
}

/// A stop text ends the answer after the committed sentence that holds it: the corrected
/// sentence decides, not the draft, in both loops.
#[test]
fn a_stop_text_ends_the_answer_after_its_sentence() {
    let stop_after = |texts: &[&str]| MachineConfig {
        stop_after: texts.iter().map(|t| (*t).to_owned()).collect(),
        ..MachineConfig::default()
    };
    let config = stop_after(&["is white"]);
    let (record, events) = run(&mut pure(), &mut Fixer::default(), config.clone());
    assert_eq!(
        record.answer,
        "The sky is blue. Grass is green.\nSnow is white. "
    );
    assert_eq!(record.summary.reason, DoneReason::StopText);
    assert_eq!(record.summary.rounds, 3);
    assert!(matches!(events.last(), Some(Event::Done(s)) if s.reason == DoneReason::StopText));
    assert!(
        matches!(&events[events.len() - 2], Event::Committed(r) if r.committed == "Snow is white. ")
    );
    let mut machine = StreamMachine::new("Q?", config).unwrap();
    let mut upstream = pure();
    let overlapped = machine
        .run_overlapped(&mut upstream, &mut Fixer::default(), |_| {})
        .unwrap();
    assert_eq!(untimed(&overlapped), untimed(&record));
    assert_eq!(overlapped.summary.reason, DoneReason::StopText);
    // Rounds 1 and 3 drafted in turn, rounds 2 and 3 ahead (round 3's dropped: the corrector
    // changed "gren"); the stop sentence's draft holds the stop text, so nothing after it.
    assert_eq!(upstream.calls, 4, "nothing drafted past the stop");

    // Only the correction holds the text: the upstream wrote "gren", the corrector "green".
    let (record, _) = run(&mut pure(), &mut Fixer::default(), stop_after(&["green"]));
    assert_eq!(record.summary.rounds, 2);
    assert_eq!(record.summary.reason, DoneReason::StopText);
    // A draft holding it that the corrector rewrites does not end the answer.
    let (record, _) = run(&mut pure(), &mut Fixer::default(), stop_after(&["gren."]));
    assert_eq!(record.summary.reason, DoneReason::Eos);
    assert_eq!(record.summary.rounds, SCRIPT.len());
}

#[test]
fn invalid_config_is_rejected() {
    for config in [
        MachineConfig {
            max_rounds: 0,
            ..MachineConfig::default()
        },
        MachineConfig {
            max_sentence_tokens: 0,
            ..MachineConfig::default()
        },
        MachineConfig {
            max_total_tokens: 0,
            ..MachineConfig::default()
        },
        MachineConfig {
            stop_after: vec!["The answer is".into(), String::new()],
            ..MachineConfig::default()
        },
    ] {
        assert!(matches!(
            StreamMachine::new("Q", config),
            Err(Error::InvalidConfig { .. })
        ));
    }
}

#[test]
fn records_round_trip_through_json() {
    let mut lm = FakeLm::new(ANSWER, true);
    let (record, _) = run(
        &mut lm,
        &mut Replace("flour", "sugar"),
        MachineConfig::default(),
    );
    let line = record.to_json_line().unwrap();
    assert!(!line.contains('\n'));
    let back: Record = serde_json::from_str(&line).unwrap();
    // Timings may lose their last float digit (serde_json's default float parsing); the rest
    // comes back exactly.
    let texts = |r: &Record| -> Vec<(String, String, String, bool, DraftStop)> {
        r.rounds
            .iter()
            .map(|x| {
                (
                    x.prefix.clone(),
                    x.last.clone(),
                    x.committed.clone(),
                    x.changed,
                    x.stop,
                )
            })
            .collect()
    };
    assert_eq!(texts(&back), texts(&record));
    assert_eq!(
        (&back.question, &back.answer, &back.draft, back.mode),
        (&record.question, &record.answer, &record.draft, record.mode)
    );
    assert_eq!(
        (back.summary.reason, back.summary.changed),
        (record.summary.reason, record.summary.changed)
    );
    assert!(line.contains("\"stop\":\"eos\""), "{line}");
}

proptest! {
    /// Any script, any caps: the identity run reproduces the script exactly (EOS) and an
    /// uppercasing corrector changes letters only, never the whitespace.
    #[test]
    fn identity_is_lossless_and_corrections_keep_layout(
        script in "[A-Za-z0-9 .!?\n-]{0,120}",
        sentence_cap in 1usize..40,
    ) {
        let config = MachineConfig { max_sentence_tokens: sentence_cap, max_rounds: 1000, max_total_tokens: 1000, ..MachineConfig::default() };
        let (record, _) = run(&mut FakeLm::new(&script, true), &mut Identity, config.clone());
        prop_assert_eq!(&record.answer, &script);
        prop_assert_eq!(&record.draft, &script);

        struct Upper;
        impl Corrector for Upper {
            fn correct(&mut self, _q: &str, _p: &str, last: &str) -> Result<Correction> {
                Ok(Correction { text: last.to_uppercase(), tokens: 1 })
            }
        }
        let (record, _) = run(&mut FakeLm::new(&script, true), &mut Upper, config);
        prop_assert_eq!(record.answer, script.to_uppercase());
    }

    /// The machine stops within its limits whatever they are.
    #[test]
    fn limits_always_hold(rounds in 1usize..30, total in 1usize..200, per in 1usize..20) {
        let config = MachineConfig { max_rounds: rounds, max_total_tokens: total, max_sentence_tokens: per, ..MachineConfig::default() };
        let (record, _) = run(&mut Endless, &mut Identity, config);
        prop_assert!(record.summary.rounds <= rounds);
        prop_assert!(record.summary.upstream_tokens <= total);
    }
}

/// An upstream whose draft depends on the accepted text only: the script's sentence after as
/// many sentences as `accepted` holds (each script sentence has one `.` or is a blank line). With `wait_for_cancel`
/// its cancellable drafts return only once cancelled.
#[derive(Default)]
struct Pure {
    sentences: Vec<&'static str>,
    wait_for_cancel: bool,
    cancelled: usize,
    /// Drafts asked for.
    calls: usize,
}

impl Upstream for Pure {
    fn draft_conversation(
        &mut self,
        conversation: &Conversation,
        accepted: &str,
        max_tokens: usize,
        cancel: Option<&AtomicBool>,
    ) -> Result<Draft> {
        conversation.require_single()?;
        if let Some(cancel) = cancel.filter(|_| self.wait_for_cancel) {
            let t = Instant::now();
            while !cancel.load(Ordering::Relaxed) {
                assert!(t.elapsed() < Duration::from_secs(10), "never cancelled");
                std::thread::yield_now();
            }
            self.cancelled += 1;
            return Err(Error::Cancelled);
        }
        self.calls += 1;
        let n = accepted.matches('.').count() + accepted.matches("\n\n").count();
        let text = self.sentences.get(n).copied().unwrap_or_default();
        let stop = if n + 1 >= self.sentences.len() {
            DraftStop::Eos
        } else {
            DraftStop::Sentence
        };
        Ok(Draft {
            text: text.into(),
            tokens: text.len().min(max_tokens),
            stop,
        })
    }
}

/// Fixes two spelling mistakes (or uppercases everything), records the prefixes it was asked
/// to prepare for, and fails its `fail_at`-th correction once.
#[derive(Default)]
struct Fixer {
    upper: bool,
    prepared: Vec<String>,
    calls: usize,
    fail_at: Option<usize>,
}

impl Corrector for Fixer {
    fn correct(&mut self, _q: &str, _prefix: &str, last: &str) -> Result<Correction> {
        self.calls += 1;
        if self.fail_at == Some(self.calls) {
            self.fail_at = None;
            return Err(Error::Protocol {
                component: "corrector",
                reason: "scripted failure".into(),
            });
        }
        let text = if self.upper {
            last.to_uppercase()
        } else {
            last.replace("gren", "green").replace("blak", "black")
        };
        Ok(Correction { text, tokens: 1 })
    }

    fn prepare(&mut self, _q: &str, prefix: &str) -> Result<()> {
        self.prepared.push(prefix.to_owned());
        Ok(())
    }
}

const SCRIPT: [&str; 5] = [
    "The sky is blue. ",
    "Grass is gren.\n",
    "Snow is white. ",
    "Coal is blak. ",
    "The end.",
];

fn pure() -> Pure {
    Pure {
        sentences: SCRIPT.to_vec(),
        ..Pure::default()
    }
}

/// What a run's record says apart from timings: answer, draft, per round (prefix, draft,
/// committed text, changed), upstream tokens, sentences changed.
type Untimed = (
    String,
    String,
    Vec<(String, String, String, bool)>,
    usize,
    usize,
);

fn untimed(record: &Record) -> Untimed {
    let rounds = record
        .rounds
        .iter()
        .map(|r| {
            (
                r.prefix.clone(),
                r.last.clone(),
                r.committed.clone(),
                r.changed,
            )
        })
        .collect();
    let s = &record.summary;
    (
        record.answer.clone(),
        record.draft.clone(),
        rounds,
        s.upstream_tokens,
        s.changed,
    )
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            Event::Drafted { .. } => "drafted",
            Event::Corrected { .. } => "corrected",
            Event::Committed(_) => "committed",
            Event::Done(_) => "done",
        })
        .collect()
}

#[test]
fn the_overlapped_loop_gives_the_sequential_record_and_events() {
    let (sequential, seq_events) =
        run(&mut pure(), &mut Fixer::default(), MachineConfig::default());
    assert_eq!(
        sequential.answer,
        "The sky is blue. Grass is green.\nSnow is white. Coal is black. The end."
    );
    let mut machine = StreamMachine::new("Q?", MachineConfig::default()).unwrap();
    let mut events = Vec::new();
    let mut fixer = Fixer::default();
    let record = machine
        .run_overlapped(&mut pure(), &mut fixer, |e| events.push(e.clone()))
        .unwrap();
    assert_eq!(untimed(&record), untimed(&sequential));
    assert_eq!(kinds(&events), kinds(&seq_events));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Done(_)))
            .count(),
        1
    );
    // Rounds 0 and 2 kept their sentence, so the drafts of rounds 1 and 3 were written ahead
    // and used; rounds 1 and 3 changed theirs, so the drafts written ahead of 2 and 4 were
    // dropped; round 4 ends the answer and nothing is written after it.
    assert_eq!(record.summary.drafts_ahead, 2);
    assert_eq!(record.summary.drafts_ahead_wasted, 2);
    // The corrector prepared for the rounds drafted the ordinary way, with their prefix.
    assert_eq!(
        fixer.prepared,
        [
            String::new(),
            SCRIPT[..1].concat() + "Grass is green.\n",
            SCRIPT[..1].concat() + "Grass is green.\n" + SCRIPT[2] + "Coal is black. ",
        ]
    );
}

#[test]
fn a_changed_sentence_cancels_the_draft_written_ahead() {
    let mut upstream = Pure {
        wait_for_cancel: true,
        ..pure()
    };
    let mut corrector = Fixer {
        upper: true,
        ..Fixer::default()
    };
    let mut machine = StreamMachine::new("Q?", MachineConfig::default()).unwrap();
    let record = machine
        .run_overlapped(&mut upstream, &mut corrector, |_| {})
        .unwrap();
    assert_eq!(record.answer, SCRIPT.concat().to_uppercase());
    assert_eq!(upstream.cancelled, SCRIPT.len() - 1);
    assert_eq!(record.summary.drafts_ahead, 0);
    assert_eq!(record.summary.drafts_ahead_wasted, SCRIPT.len() - 1);
}

#[test]
fn a_failed_correction_in_the_overlapped_loop_can_be_resumed() {
    let mut corrector = Fixer {
        fail_at: Some(2),
        ..Fixer::default()
    };
    let mut upstream = pure();
    let mut machine = StreamMachine::new("Q?", MachineConfig::default()).unwrap();
    let err = machine
        .run_overlapped(&mut upstream, &mut corrector, |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("scripted failure"), "{err}");
    assert!(matches!(machine.state(), State::Correcting { .. }));
    assert_eq!(machine.accepted(), SCRIPT[0]);
    let record = machine
        .run_overlapped(&mut upstream, &mut corrector, |_| {})
        .unwrap();
    let (sequential, _) = run(&mut pure(), &mut Fixer::default(), MachineConfig::default());
    assert_eq!(untimed(&record), untimed(&sequential));
    // Ahead of round 1: used. Ahead of round 2: dropped at the failure, and again after the
    // retry changed the sentence. Ahead of round 3: used. Ahead of round 4: dropped.
    assert_eq!(record.summary.drafts_ahead, 2);
    assert_eq!(record.summary.drafts_ahead_wasted, 3);
}

/// The limits hold in the overlapped loop too: nothing is drafted ahead past `max_rounds`, and
/// the token budget of a draft written ahead is the one the next round would get.
#[test]
fn the_overlapped_loop_keeps_the_limits() {
    for max_rounds in 1..=6 {
        for max_total_tokens in [10, 40, 1000] {
            let config = MachineConfig {
                max_rounds,
                max_total_tokens,
                max_sentence_tokens: 16,
                ..MachineConfig::default()
            };
            let (sequential, _) = run(&mut pure(), &mut Fixer::default(), config.clone());
            let mut machine = StreamMachine::new("Q?", config).unwrap();
            let record = machine
                .run_overlapped(&mut pure(), &mut Fixer::default(), |_| {})
                .unwrap();
            assert_eq!(
                untimed(&record),
                untimed(&sequential),
                "{max_rounds} {max_total_tokens}"
            );
            assert_eq!(record.summary.reason, sequential.summary.reason);
            assert!(record.summary.rounds <= max_rounds);
            assert!(record.summary.upstream_tokens <= max_total_tokens);
        }
    }
    // Whitespace-only drafts skip the corrector in both loops.
    let blank = || Pure {
        sentences: vec!["One. ", "\n\n", "Two."],
        ..Pure::default()
    };
    let (sequential, _) = run(
        &mut blank(),
        &mut Fixer::default(),
        MachineConfig::default(),
    );
    let mut machine = StreamMachine::new("Q?", MachineConfig::default()).unwrap();
    let record = machine
        .run_overlapped(&mut blank(), &mut Fixer::default(), |_| {})
        .unwrap();
    assert_eq!(untimed(&record), untimed(&sequential));
}
