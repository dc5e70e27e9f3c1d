//! Arbitrary chunking equals the whole-stream result, for both the pull
//! (`next_event`) and push (`drain`) styles, with any buffer size.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tickwire::parse::{Event, Parser, SliceParser};

#[derive(Arbitrary, Debug)]
struct Input {
    cuts: Vec<u8>,
    capacity: u16,
    drain: bool,
    data: Vec<u8>,
}

#[derive(Debug, PartialEq)]
enum Owned {
    Frame(Vec<u8>, bool),
    Other(String),
}

fn own(e: &Event<'_>) -> Owned {
    match e {
        Event::Frame(m) => Owned::Frame(m.as_bytes().to_vec(), false),
        Event::Duplicate(m) => Owned::Frame(m.as_bytes().to_vec(), true),
        other => Owned::Other(format!("{other:?}")),
    }
}

fuzz_target!(|input: Input| {
    let mut slice = SliceParser::new(&input.data);
    let whole: Vec<Owned> = slice.by_ref().map(|e| own(&e)).collect();
    // The smallest buffer holds the longest frame (72 bytes, an Auth).
    let capacity = tickwire::wire::MAX_FRAME_LEN + usize::from(input.capacity % 1024);
    let mut parser = Parser::with_capacity(capacity).expect("capacity is at least MAX_FRAME_LEN");
    let mut got = Vec::new();
    let mut rest = &input.data[..];
    let mut cuts = input.cuts.iter().map(|&c| usize::from(c).max(1)).cycle();
    let pull = |p: &mut Parser<Box<[u8]>>, got: &mut Vec<Owned>| {
        if input.drain {
            p.drain(|e| got.push(own(&e)));
        } else {
            while let Some(e) = p.next_event() {
                got.push(own(&e));
            }
        }
    };
    let mut rounds = 0usize;
    while !rest.is_empty() {
        let want = cuts.next().unwrap_or(rest.len()).min(rest.len());
        let (mut piece, tail) = rest.split_at(want);
        rest = tail;
        while !piece.is_empty() {
            let n = parser.fill_from(piece);
            piece = &piece[n..];
            pull(&mut parser, &mut got);
            rounds += 1;
            assert!(rounds <= 4 * input.data.len() + 4, "no progress");
        }
    }
    parser.finish();
    pull(&mut parser, &mut got);
    assert_eq!(got, whole);
    // The fast loop keeps its counters apart and writes them back: they
    // must come out as the one-event-at-a-time path's.
    assert_eq!(parser.stats(), slice.stats());
    assert_eq!(parser.tracker(), slice.tracker());
});
