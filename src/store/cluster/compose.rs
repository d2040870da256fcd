//! How pieces of any size become one object without passing the bytes
//! through a node where the object store can join them itself.
//!
//! An upload's pieces are objects of any size (a chunk's tail may be a few
//! bytes). A multipart upload joins parts inside the store, and
//! UploadPartCopy makes a part of a range of an existing object, but every
//! part except the last must hold at least [`MIN_PART`] bytes. So a piece
//! (or what is left of it) that is big enough is copied as a part, and a
//! run of small pieces is read back and sent as one part, topped up from
//! the next piece when the run alone is too small. What is read back is
//! under two [`MIN_PART`]s per run of small pieces; the rest never leaves
//! the store.

/// S3's smallest part, but for the last.
pub(super) const MIN_PART: u64 = 5 << 20;
/// S3's largest part, and the largest object one CopyObject copies.
pub(super) const MAX_COPY: u64 = 5 << 30;
/// The parts of one multipart upload Swift takes by default (S3: 10,000);
/// the `max_parts` setting of the object store's URL changes it.
pub(super) const MAX_PARTS: usize = 1000;

/// A byte range `start..end` of piece number `piece`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    pub piece: usize,
    pub start: u64,
    pub end: u64,
}

impl Segment {
    fn len(&self) -> u64 {
        self.end - self.start
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    /// Copied inside the store.
    Copy(Segment),
    /// Read back and sent: small pieces joined.
    Upload(Vec<Segment>),
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Copy(s) => s.len(),
            Part::Upload(segments) => segments.iter().map(Segment::len).sum(),
        }
    }
}

/// The parts that join pieces of `sizes`, in order; an error if they are
/// more than `max_parts` (see [`groups`]).
pub(super) fn plan(sizes: &[u64], max_parts: usize) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut run: Vec<Segment> = Vec::new();
    let mut run_len = 0;
    for (piece, &size) in sizes.iter().enumerate() {
        let mut start = 0;
        if run_len > 0 {
            // Top the run up to a valid part from this piece.
            let take = (MIN_PART - run_len).min(size);
            if take > 0 {
                run.push(Segment {
                    piece,
                    start: 0,
                    end: take,
                });
            }
            run_len += take;
            start = take;
            if run_len < MIN_PART {
                continue;
            }
            // What would be left of the piece is too small to stand alone:
            // it joins the run, which stays under two minimum parts.
            if size - start < MIN_PART {
                if let Some(last) = run.last_mut().filter(|s| s.piece == piece) {
                    last.end = size;
                }
                parts.push(Part::Upload(std::mem::take(&mut run)));
                run_len = 0;
                continue;
            }
            parts.push(Part::Upload(std::mem::take(&mut run)));
            run_len = 0;
        }
        let rest = size - start;
        if rest >= MIN_PART {
            // Copied in parts of at most MAX_COPY; a remainder too small to
            // stand alone goes with the part before it.
            let mut at = start;
            while at < size {
                let mut end = (at + MAX_COPY).min(size);
                if size - end < MIN_PART {
                    end = size;
                    if end - at > MAX_COPY {
                        end = size - MIN_PART;
                    }
                }
                parts.push(Part::Copy(Segment {
                    piece,
                    start: at,
                    end,
                }));
                at = end;
            }
        } else if rest > 0 {
            run.push(Segment {
                piece,
                start,
                end: size,
            });
            run_len += rest;
        }
    }
    if !run.is_empty() {
        parts.push(Part::Upload(run));
    }
    if parts.len() > max_parts {
        return Err(format!(
            "{} pieces need {} parts; the object store takes at most {max_parts}",
            sizes.len(),
            parts.len()
        ));
    }
    debug_assert!(parts.iter().rev().skip(1).all(|p| p.len() >= MIN_PART));
    Ok(parts)
}

/// Runs of consecutive pieces (as index ranges) each of which one
/// multipart upload of at most `max_parts` parts joins: when all of them
/// need more, each run is joined into an object of its own first, and
/// those objects are joined after (again in runs, if need be). `None` if
/// no run of two pieces fits, so joining in runs would not get smaller.
pub(super) fn groups(sizes: &[u64], max_parts: usize) -> Option<Vec<std::ops::Range<usize>>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < sizes.len() {
        let mut end = start + 1;
        while end < sizes.len() && plan(&sizes[start..=end], max_parts).is_ok() {
            end += 1;
        }
        if end - start < 2 && end < sizes.len() {
            return None;
        }
        runs.push(start..end);
        start = end;
    }
    Some(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    /// The plan covers every byte once, in order, with valid part sizes.
    fn check(sizes: &[u64]) -> Vec<Part> {
        let parts = plan(sizes, MAX_PARTS).unwrap();
        let mut covered = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            if i + 1 < parts.len() {
                assert!(part.len() >= MIN_PART, "part {i} of {sizes:?}: {part:?}");
            }
            if let Part::Copy(s) = part {
                assert!(s.len() <= MAX_COPY);
            }
            if let Part::Upload(segments) = part {
                // What is read back stays small.
                assert!(part.len() < 2 * MIN_PART, "{part:?}");
                covered.extend(segments.iter().copied());
            } else if let Part::Copy(s) = part {
                covered.push(*s);
            }
        }
        let mut next = (0, 0);
        for s in covered {
            while next.0 < s.piece {
                assert_eq!(next.1, sizes[next.0], "piece {} not whole", next.0);
                next = (next.0 + 1, 0);
            }
            assert_eq!((s.piece, s.start), next, "gap or overlap in {sizes:?}");
            next.1 = s.end;
        }
        parts
    }

    #[test]
    fn big_pieces_are_copied_whole() {
        let parts = check(&[8 * M, 8 * M, 3]);
        assert!(matches!(parts[0], Part::Copy(_)));
        assert!(matches!(parts[1], Part::Copy(_)));
        assert_eq!(parts.len(), 3);
    }

    #[test]
    fn small_pieces_join_and_borrow_from_the_next() {
        let parts = check(&[M, M, 20 * M]);
        assert_eq!(parts.len(), 2);
        assert!(matches!(&parts[0], Part::Upload(s) if s.len() == 3));
        assert!(matches!(parts[1], Part::Copy(s) if s.start == 3 * M));
    }

    #[test]
    fn a_small_remainder_joins_the_run() {
        let parts = check(&[M, 6 * M, 8 * M]);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len(), 7 * M);
    }

    #[test]
    fn odd_shapes() {
        for sizes in [
            vec![1],
            vec![0, 0, 1],
            vec![MIN_PART - 1, 1, 1],
            vec![MIN_PART, MIN_PART - 1, MIN_PART + 1, 2],
            vec![3 * M; 40],
            vec![7; 100],
            vec![MAX_COPY + 1],
            vec![2 * MAX_COPY + 3 * M],
            vec![M, MAX_COPY + MIN_PART + 1],
        ] {
            check(&sizes);
        }
    }

    #[test]
    fn too_many_parts_is_an_error() {
        assert!(plan(&vec![MIN_PART; MAX_PARTS + 1], MAX_PARTS).is_err());
        assert!(plan(&vec![MIN_PART; MAX_PARTS], MAX_PARTS).is_ok());
    }

    #[test]
    fn too_many_pieces_are_joined_in_runs_that_each_fit() {
        let sizes = vec![6 * M; 7];
        let runs = groups(&sizes, 3).unwrap();
        assert_eq!(runs, [0..3, 3..6, 6..7]);
        for run in runs {
            assert!(plan(&sizes[run], 3).is_ok());
        }
        // Small pieces share parts, so more of them fit in a run.
        let runs = groups(&[M; 20], 2).unwrap();
        assert_eq!(runs, [0..10, 10..20]);
        // Pieces too big to pair under the cap cannot be joined in runs.
        assert_eq!(groups(&[3 * MAX_COPY, 3 * MAX_COPY], 3), None);
    }
}
