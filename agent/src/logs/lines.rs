//! Splitting a byte stream into lines with a length cap.
//!
//! A line longer than [`MAX_LINE`] is skipped whole (reported once as [`Piece::Oversized`]) and
//! never buffered: memory stays bounded whatever the input.

/// Longest line analysed, in bytes (journal JSON entries of a few KiB fit comfortably).
pub const MAX_LINE: usize = 64 * 1024;

/// One piece of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A complete line, without its `\n`.
    Line(&'a [u8]),
    /// A line longer than the cap was skipped.
    Oversized,
}

/// Incremental line splitter.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    discarding: bool,
    cap: usize,
}

impl LineSplitter {
    /// A splitter with the default cap.
    pub fn new() -> LineSplitter {
        LineSplitter::with_cap(MAX_LINE)
    }

    /// A splitter with a custom cap (at least 1 byte).
    pub fn with_cap(cap: usize) -> LineSplitter {
        LineSplitter {
            partial: Vec::new(),
            discarding: false,
            cap: cap.max(1),
        }
    }

    /// Bytes of an incomplete line held back (0 when the stream ends on a line boundary).
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// True while the rest of an oversized line is being skipped.
    pub fn discarding(&self) -> bool {
        self.discarding
    }

    /// Feeds a chunk; calls `f` for every complete line or skipped oversized line.
    pub fn feed(&mut self, mut chunk: &[u8], mut f: impl FnMut(Piece<'_>)) {
        while !chunk.is_empty() {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let part = &chunk[..nl];
                    chunk = &chunk[nl + 1..];
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    if self.partial.is_empty() {
                        if part.len() > self.cap {
                            f(Piece::Oversized);
                        } else {
                            f(Piece::Line(part));
                        }
                    } else if self.partial.len() + part.len() > self.cap {
                        self.partial.clear();
                        f(Piece::Oversized);
                    } else {
                        self.partial.extend_from_slice(part);
                        f(Piece::Line(&self.partial));
                        self.partial.clear();
                    }
                }
                None => {
                    if !self.discarding {
                        if self.partial.len() + chunk.len() > self.cap {
                            self.partial.clear();
                            self.discarding = true;
                            f(Piece::Oversized);
                        } else {
                            self.partial.extend_from_slice(chunk);
                        }
                    }
                    chunk = &[];
                }
            }
        }
    }

    /// End of input: delivers a final line that had no `\n`.
    pub fn finish(&mut self, mut f: impl FnMut(Piece<'_>)) {
        if !self.discarding && !self.partial.is_empty() {
            f(Piece::Line(&self.partial));
        }
        self.partial.clear();
        self.discarding = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], cap: usize) -> Vec<Option<Vec<u8>>> {
        let mut s = LineSplitter::with_cap(cap);
        let mut out = vec![];
        for c in chunks {
            s.feed(c, |p| {
                out.push(match p {
                    Piece::Line(l) => Some(l.to_vec()),
                    Piece::Oversized => None,
                })
            });
        }
        s.finish(|p| {
            out.push(match p {
                Piece::Line(l) => Some(l.to_vec()),
                Piece::Oversized => None,
            })
        });
        out
    }

    #[test]
    fn lines_across_chunks_and_a_final_line_without_newline() {
        let out = split(&[b"ab", b"c\nde", b"f\n", b"g"], 10);
        assert_eq!(
            out,
            vec![
                Some(b"abc".to_vec()),
                Some(b"def".to_vec()),
                Some(b"g".to_vec())
            ]
        );
    }

    #[test]
    fn oversized_lines_are_skipped_once_and_never_buffered() {
        let big = vec![b'x'; 100];
        let out = split(&[b"ok\n", &big, &big, b"\nnext\n"], 10);
        assert_eq!(
            out,
            vec![Some(b"ok".to_vec()), None, Some(b"next".to_vec())]
        );
        let out = split(&[&big, b"\nnext\n"], 10);
        assert_eq!(out, vec![None, Some(b"next".to_vec())]);
    }
}
