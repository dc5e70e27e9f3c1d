//! The sequence tracker on arbitrary frame arrivals: never panics, and its
//! counters agree with the verdicts it gave.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire::sequence::{SequenceTracker, Verdict};
use tickwire::MsgType;

fuzz_target!(|arrivals: Vec<(u8, u64, u8)>| {
    let mut tracker = SequenceTracker::new();
    let (mut in_order, mut duplicates, mut gaps, mut missing, mut sessions) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for (kind, sequence, session) in arrivals {
        let msg_type = MsgType::ALL[usize::from(kind) % MsgType::ALL.len()];
        let before = tracker.expected();
        let stats_before = *tracker.stats();
        let verdict = tracker.observe(msg_type, sequence, u64::from(session % 4));
        if matches!(msg_type, MsgType::Auth | MsgType::Rejected) {
            // Sequence 0 by rule, ignored whatever it holds (revision 3).
            assert_eq!(verdict, Verdict::Control);
            assert_eq!(tracker.expected(), before);
            assert_eq!(tracker.stats().control, stats_before.control + 1);
        }
        match verdict {
            Verdict::InOrder => in_order += 1,
            Verdict::Duplicate => {
                duplicates += 1;
                assert!(before.is_some_and(|e| sequence < e));
            }
            Verdict::Gap(g) => {
                assert!(g.first <= g.last);
                assert_eq!(Some(g.first), before);
                gaps += 1;
                missing = missing.saturating_add(g.len());
                if msg_type.is_data() {
                    in_order += 1;
                }
            }
            Verdict::NewSession { sequence: s, .. } => {
                sessions += 1;
                assert_eq!(tracker.expected(), Some(s));
            }
            Verdict::Control => {}
            _ => {}
        }
    }
    let st = tracker.stats();
    assert_eq!(
        (st.in_order, st.duplicates, st.gaps, st.missing, st.sessions),
        (in_order, duplicates, gaps, missing, sessions)
    );
});
