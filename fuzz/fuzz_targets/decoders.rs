//! Feeds arbitrary bytes, cut into arbitrary chunks, to every framing decoder.
//!
//! Checked on every input, besides "never panics":
//! * chunking does not matter: the frames (and the kind of error, if any)
//!   equal those from decoding the whole stream in one piece;
//! * no frame exceeds the limit, and while waiting for more bytes a decoder
//!   holds less than one maximal frame (plus header);
//! * re-encoding the decoded frames reproduces the stream (where the
//!   encoding is canonical).
#![no_main]

use std::mem::discriminant;

use libfuzzer_sys::fuzz_target;
use socketserver::framing::{
    Decoder, Encoder, FixedSize, FrameBuf, FrameError, LengthPrefixed, Lines, HEADER_LEN,
};

/// Frames decoded before the stream ended or a fatal error occurred.
type Outcome = (Vec<Vec<u8>>, Result<(), FrameError>);

fuzz_target!(|input: (u8, Vec<u8>, Vec<u8>)| {
    let (limit, cuts, stream) = input;
    let max = usize::from(limit);
    let size = max % 64 + 1;

    let (frames, result) = check(
        LengthPrefixed::with_max_frame_len(max),
        &stream,
        &cuts,
        max,
        HEADER_LEN + max,
    );
    if result.is_ok() {
        assert_eq!(
            encode(LengthPrefixed::with_max_frame_len(max), &frames),
            stream
        );
    }

    let (frames, _) = check(Lines::with_max_line_len(max), &stream, &cuts, max, max + 2);
    assert!(frames.iter().all(|line| !line.contains(&b'\n')));

    let (frames, result) = check(FixedSize::new(size), &stream, &cuts, size, size);
    if result.is_ok() {
        assert_eq!(encode(FixedSize::new(size), &frames), stream);
    }
});

/// Decodes `stream` in chunks sized by `cuts` and in one piece, checks the
/// invariants and returns the chunked outcome.
fn check<D>(decoder: D, stream: &[u8], cuts: &[u8], max: usize, bound: usize) -> Outcome
where
    D: Decoder<Frame = Vec<u8>> + Clone,
{
    let chunked = decode(decoder.clone(), stream, cuts, bound);
    let whole = decode(decoder, stream, &[], bound);
    assert_eq!(chunked.0, whole.0, "frames depend on chunking");
    assert_eq!(
        chunked.1.as_ref().err().map(discriminant),
        whole.1.as_ref().err().map(discriminant),
        "error depends on chunking"
    );
    assert!(chunked.0.iter().all(|frame| frame.len() <= max));
    chunked
}

/// Feeds `stream` like an event loop; chunk sizes cycle through `cuts` (an
/// empty `cuts` means a single chunk).
fn decode<D: Decoder<Frame = Vec<u8>>>(
    mut decoder: D,
    stream: &[u8],
    cuts: &[u8],
    bound: usize,
) -> Outcome {
    let mut buf = FrameBuf::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut sizes = cuts.iter().map(|&c| usize::from(c) + 1).cycle();
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(sizes.next().unwrap_or(rest.len()).min(rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(err) => return (frames, Err(err)),
            }
        }
        assert!(
            buf.len() < bound,
            "{} bytes buffered, bound {bound}",
            buf.len()
        );
    }
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, Ok(())),
            Err(err) => return (frames, Err(err)),
        }
    }
}

fn encode<E: Encoder<[u8]>>(mut encoder: E, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        encoder
            .encode(frame, &mut out)
            .expect("decoded frames re-encode");
    }
    out
}
