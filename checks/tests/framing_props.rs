//! Property tests for `socketserver::framing`: however a byte stream is cut
//! into chunks, decoders must recover exactly the frames that were encoded,
//! and no input may make them panic or buffer beyond their limit.

use std::io::{self, Read};

use proptest::collection::vec;
use proptest::prelude::*;
use socketserver::framing::{
    Decoder, Encoder, FixedSize, FrameBuf, FrameError, FramedReader, HEADER_LEN, LengthPrefixed,
    Lines, read_length_prefixed, write_length_prefixed,
};

/// Cuts `stream` into consecutive chunks whose sizes cycle through `sizes`.
fn chunks<'a>(stream: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = stream;
    sizes.iter().cycle().map_while(move |&size| {
        if rest.is_empty() {
            return None;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        Some(chunk)
    })
}

/// Feeds `stream` chunk by chunk like an event loop would, decoding greedily
/// after every chunk, then finishes with `decode_eof`.
fn decode_chunked<D: Decoder<Frame = Vec<u8>>>(
    decoder: &mut D,
    stream: &[u8],
    sizes: &[usize],
) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut buf = FrameBuf::new();
    let mut frames = Vec::new();
    for chunk in chunks(stream, sizes) {
        buf.extend_from_slice(chunk);
        while let Some(frame) = decoder.decode(&mut buf)? {
            frames.push(frame);
        }
    }
    while let Some(frame) = decoder.decode_eof(&mut buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

/// Feeds arbitrary bytes and checks that, whenever the decoder asks for more
/// input, it holds fewer than `bound` bytes, and that no frame exceeds `max`.
fn check_bounded<D: Decoder<Frame = Vec<u8>>>(
    mut decoder: D,
    stream: &[u8],
    sizes: &[usize],
    max: usize,
    bound: usize,
) -> Result<(), TestCaseError> {
    let mut buf = FrameBuf::new();
    for chunk in chunks(stream, sizes) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => prop_assert!(frame.len() <= max),
                Ok(None) => break,
                Err(_) => return Ok(()), // fatal: a real server closes here
            }
        }
        prop_assert!(buf.len() < bound, "{} bytes buffered", buf.len());
    }
    if let Ok(Some(frame)) = decoder.decode_eof(&mut buf) {
        prop_assert!(frame.len() <= max);
    }
    Ok(())
}

/// A blocking stream that returns short reads of the given sizes (cycling),
/// where a size of 0 means "fail with `Interrupted`" rather than EOF.
struct ShortReads {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    call: usize,
}

impl ShortReads {
    fn new(data: Vec<u8>, sizes: Vec<usize>) -> Self {
        Self {
            data,
            pos: 0,
            sizes,
            call: 0,
        }
    }
}

impl Read for ShortReads {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.call % self.sizes.len()];
        self.call += 1;
        if size == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = size.min(out.len()).min(self.data.len() - self.pos);
        out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn read_all<D: Decoder<Frame = Vec<u8>>>(
    mut reader: FramedReader<ShortReads, D>,
) -> io::Result<Vec<Vec<u8>>> {
    let mut frames = Vec::new();
    while let Some(frame) = reader.read_frame()? {
        frames.push(frame);
    }
    Ok(frames)
}

fn encode_all<E: Encoder<[u8]>>(encoder: &mut E, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut stream = Vec::new();
    for frame in frames {
        encoder.encode(frame, &mut stream).expect("valid frame");
    }
    stream
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(1..24usize, 1..8)
}

/// Read sizes for `ShortReads`; 0 injects an `Interrupted` error.
fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(0..24usize, 1..8).prop_filter("needs a non-zero read", |s| s.iter().any(|&n| n > 0))
}

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    vec(vec(any::<u8>(), 0..64), 0..24)
}

/// Lines the `Lines` codec can carry: no `\n`, no trailing `\r`.
fn lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let line = vec(any::<u8>().prop_filter("no LF", |&b| b != b'\n'), 0..64).prop_map(|mut l| {
        while l.last() == Some(&b'\r') {
            l.pop();
        }
        l
    });
    vec(line, 0..24)
}

/// A record size and records of exactly that size.
fn records() -> impl Strategy<Value = (usize, Vec<Vec<u8>>)> {
    (1..16usize).prop_flat_map(|size| (Just(size), vec(vec(any::<u8>(), size), 0..24)))
}

proptest! {
    #[test]
    fn length_prefixed_round_trips_any_chunking(frames in payloads(), sizes in chunk_sizes()) {
        let stream = encode_all(&mut LengthPrefixed::with_max_frame_len(64), &frames);
        let decoded = decode_chunked(&mut LengthPrefixed::with_max_frame_len(64), &stream, &sizes);
        prop_assert_eq!(decoded, Ok(frames));
    }

    #[test]
    fn lines_round_trip_any_chunking_lf_or_crlf(
        frames in lines(),
        crlf in vec(any::<bool>(), 24),
        sizes in chunk_sizes(),
    ) {
        let mut stream = Vec::new();
        for (frame, crlf) in frames.iter().zip(&crlf) {
            Lines::new().encode(frame, &mut stream).expect("valid line");
            if *crlf {
                stream.insert(stream.len() - 1, b'\r');
            }
        }
        let decoded = decode_chunked(&mut Lines::with_max_line_len(64), &stream, &sizes);
        prop_assert_eq!(decoded, Ok(frames));
    }

    #[test]
    fn fixed_size_round_trips_any_chunking((size, records) in records(), sizes in chunk_sizes()) {
        let stream = encode_all(&mut FixedSize::new(size), &records);
        let decoded = decode_chunked(&mut FixedSize::new(size), &stream, &sizes);
        prop_assert_eq!(decoded, Ok(records));
    }

    #[test]
    fn framed_reader_round_trips_short_reads(
        frames in payloads(),
        lines in lines(),
        reads in read_sizes(),
    ) {
        let stream = encode_all(&mut LengthPrefixed::new(), &frames);
        let reader = FramedReader::new(ShortReads::new(stream, reads.clone()), LengthPrefixed::new());
        prop_assert_eq!(read_all(reader)?, frames);

        let stream = encode_all(&mut Lines::new(), &lines);
        let reader = FramedReader::new(ShortReads::new(stream, reads), Lines::new());
        prop_assert_eq!(read_all(reader)?, lines);
    }

    #[test]
    fn read_length_prefixed_round_trips_short_reads(frames in payloads(), reads in read_sizes()) {
        let mut stream = Vec::new();
        for frame in &frames {
            write_length_prefixed(&mut stream, frame).expect("write to Vec");
        }
        let mut reader = ShortReads::new(stream, reads);
        let mut decoded = Vec::new();
        while let Some(frame) = read_length_prefixed(&mut reader, 64)? {
            decoded.push(frame);
        }
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn truncated_stream_is_an_error_not_a_frame(frames in payloads(), cut in 1..64usize) {
        let stream = encode_all(&mut LengthPrefixed::new(), &frames);
        prop_assume!(!stream.is_empty());
        let stream = &stream[..stream.len() - cut.min(stream.len())];
        let decoded = decode_chunked(&mut LengthPrefixed::new(), stream, &[7]);
        let is_truncated = matches!(decoded, Err(FrameError::Truncated { .. }));
        // Cutting exactly at a frame boundary is indistinguishable from a clean end.
        prop_assert!(is_truncated || frames.starts_with(&decoded.expect("no other error")));
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_overbuffer(
        stream in vec(any::<u8>(), 0..512),
        sizes in chunk_sizes(),
        max in 0..32usize,
    ) {
        check_bounded(LengthPrefixed::with_max_frame_len(max), &stream, &sizes, max, HEADER_LEN + max)?;
        check_bounded(Lines::with_max_line_len(max), &stream, &sizes, max, max + 2)?;
        let size = max + 1;
        check_bounded(FixedSize::new(size), &stream, &sizes, size, size)?;
    }
}
