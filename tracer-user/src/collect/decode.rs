//! Ring-buffer records as the kernel half sends them, decoded in one place.
//!
//! Every record starts with its kind (`tracer_common::EventKind`, a `u32`) and is the whole
//! `#[repr(C)]` struct of that kind (their sizes are asserted at compile time in
//! `tracer-common`). Decoding never panics: a record too short for its kind or of a kind this
//! build does not know is a [`DecodeError`], which the collector counts and reports.
use tracer_common::{
    CallDone, EventKind, GoCreation, GoTimerStart, ThreadExit, ThreadRename, UserStackTop, WaitDone,
};

/// One ring-buffer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    WaitDone(WaitDone),
    /// Boxed: 544 bytes, where every other record is under 100.
    UserStackTop(Box<UserStackTop>),
    CallDone(CallDone),
    ThreadExit(ThreadExit),
    ThreadRename(ThreadRename),
    GoCreation(GoCreation),
    GoTimerStart(GoTimerStart),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not even the kind fits.
    #[error("a {len}-byte record has no kind (4 bytes)")]
    NoKind { len: usize },
    /// Shorter than its kind's struct: the two halves disagree on the layout.
    #[error("a {kind:?} record of {len} bytes, shorter than its {need} bytes")]
    Short {
        kind: EventKind,
        len: usize,
        need: usize,
    },
    /// A kind this build does not know: the kernel object is from another build.
    #[error("a record of unknown kind {kind} ({len} bytes)")]
    UnknownKind { kind: u32, len: usize },
}

/// Records that could not be decoded: counted, and the first one's error kept for the report.
#[derive(Debug, Default)]
pub struct Undecodable {
    pub count: u64,
    pub first: Option<DecodeError>,
}

impl Undecodable {
    pub fn add(&mut self, error: DecodeError) {
        self.count += 1;
        self.first.get_or_insert(error);
    }

    /// The report's note about them; none when every record was decoded.
    pub fn note(&self) -> Option<String> {
        let first = self.first.as_ref()?;
        Some(format!(
            "{} ring-buffer record(s) could not be decoded and were left out (first: {first}): the kernel object and leaktrace disagree on the record format",
            self.count
        ))
    }
}

/// Decodes one record (`bytes` as the ring buffer delivered it).
///
/// Errors: [`DecodeError`] when the record is shorter than its kind needs or of an unknown kind.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let Some(kind) = bytes.first_chunk::<4>() else {
        return Err(DecodeError::NoKind { len: bytes.len() });
    };
    let kind = EventKind::try_from(u32::from_ne_bytes(*kind)).map_err(|kind| {
        DecodeError::UnknownKind {
            kind,
            len: bytes.len(),
        }
    })?;
    Ok(match kind {
        EventKind::WaitDone => Record::WaitDone(read(kind, bytes)?),
        EventKind::UserStackTop => Record::UserStackTop(Box::new(read(kind, bytes)?)),
        EventKind::CallDone => Record::CallDone(read(kind, bytes)?),
        EventKind::ThreadExit => Record::ThreadExit(read(kind, bytes)?),
        EventKind::ThreadRename => Record::ThreadRename(read(kind, bytes)?),
        EventKind::GoCreation => Record::GoCreation(read(kind, bytes)?),
        EventKind::GoTimerStart => Record::GoTimerStart(read(kind, bytes)?),
    })
}

/// The `T` at the start of `bytes`, which must hold one.
fn read<T: aya::Pod>(kind: EventKind, bytes: &[u8]) -> Result<T, DecodeError> {
    debug_assert_eq!(kind.record_size(), size_of::<T>());
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            kind,
            len: bytes.len(),
            need: size_of::<T>(),
        });
    }
    // SAFETY: `bytes` holds at least a T, and T is Pod (repr(C) integers with explicit padding:
    // every bit pattern is a valid T); read_unaligned makes no alignment assumption.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{PendingCall, PendingWait, STACK_TOP_WORDS};

    /// The bytes of `value` as the kernel half sends them.
    fn bytes_of<T: aya::Pod>(value: &T) -> Vec<u8> {
        // SAFETY: T is Pod: no padding bytes, so every byte is initialised.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn records() -> Vec<Record> {
        vec![
            Record::WaitDone(WaitDone {
                kind: EventKind::WaitDone as u32,
                tid: 7,
                wait: PendingWait {
                    start_ns: 11,
                    uaddr: 0x1000,
                    timeout_ns: 0,
                    tgid: 6,
                    op: 9,
                    syscall: 0,
                    flags: 0,
                },
                duration_ns: 5,
                ret: -110,
                user_stack_id: 3,
                kernel_stack_id: -1,
            }),
            Record::UserStackTop(Box::new(UserStackTop {
                kind: EventKind::UserStackTop as u32,
                tid: 7,
                stack_id: 3,
                words_read: 8,
                sp: 0x7ff0,
                bp: 0x7ff8,
                words: core::array::from_fn(|i| i as u64 * 3),
            })),
            Record::CallDone(CallDone {
                kind: EventKind::CallDone as u32,
                tid: 8,
                call: PendingCall {
                    start_ns: 1,
                    args: [1, 2, 3, 4],
                    tgid: 6,
                    call: tracer_common::native_call::TIMERFD_SETTIME,
                },
                end_ns: 2,
                ret: 0,
                value: 9,
                user_stack_id: -1,
                _pad: 0,
            }),
            Record::ThreadExit(ThreadExit {
                kind: EventKind::ThreadExit as u32,
                tid: 9,
                at_ns: 3,
                group_dead: 1,
                _pad: 0,
            }),
            Record::ThreadRename(ThreadRename {
                kind: EventKind::ThreadRename as u32,
                tid: 9,
                at_ns: 4,
                comm: *b"worker-1\0\0\0\0\0\0\0\0",
            }),
            Record::GoCreation(GoCreation {
                kind: EventKind::GoCreation as u32,
                tid: 10,
                go_pc: 0x45_0000,
                stack_id: 2,
                _pad: 0,
                creator_goid: 1,
                creator_gopc: 0x44_0000,
            }),
            Record::GoTimerStart(GoTimerStart {
                kind: EventKind::GoTimerStart as u32,
                tid: 10,
                caller_pc: 0x46_0000,
                rax: 0xc000,
                rsi: 0xc008,
                stack_id: 4,
                _pad: 0,
                func_pc: 0x47_0000,
                arg_pc: 0x48_0000,
            }),
        ]
    }

    fn encode(record: &Record) -> Vec<u8> {
        match record {
            Record::WaitDone(r) => bytes_of(r),
            Record::UserStackTop(r) => bytes_of(&**r),
            Record::CallDone(r) => bytes_of(r),
            Record::ThreadExit(r) => bytes_of(r),
            Record::ThreadRename(r) => bytes_of(r),
            Record::GoCreation(r) => bytes_of(r),
            Record::GoTimerStart(r) => bytes_of(r),
        }
    }

    #[test]
    fn each_record_decodes_to_what_was_sent() {
        let records = records();
        assert_eq!(
            records.len(),
            EventKind::ALL.len(),
            "one record of each kind"
        );
        for record in records {
            let bytes = encode(&record);
            assert_eq!(decode(&bytes), Ok(record.clone()));
            // The ring buffer may round a record up: trailing bytes are not part of it.
            let mut padded = bytes.clone();
            padded.extend_from_slice(&[0xff; 8]);
            assert_eq!(decode(&padded), Ok(record));
        }
        assert_eq!(
            EventKind::UserStackTop.record_size(),
            32 + 8 * STACK_TOP_WORDS
        );
    }

    #[test]
    fn a_short_record_is_an_error_naming_its_kind() {
        for record in records() {
            let bytes = encode(&record);
            let kind =
                EventKind::try_from(u32::from_ne_bytes(bytes[..4].try_into().unwrap())).unwrap();
            for len in [4, bytes.len() - 1] {
                assert_eq!(
                    decode(&bytes[..len]),
                    Err(DecodeError::Short {
                        kind,
                        len,
                        need: bytes.len()
                    })
                );
            }
        }
        for len in 0..4 {
            assert_eq!(
                decode(&[1, 0, 0, 0][..len]),
                Err(DecodeError::NoKind { len })
            );
        }
    }

    #[test]
    fn an_unknown_kind_is_an_error_with_its_value() {
        for kind in [0u32, 2, 26, u32::MAX] {
            let mut bytes = kind.to_ne_bytes().to_vec();
            bytes.extend_from_slice(&[0; 60]);
            assert_eq!(
                decode(&bytes),
                Err(DecodeError::UnknownKind { kind, len: 64 })
            );
        }
        let error = decode(&[2, 0, 0, 0]).unwrap_err().to_string();
        assert_eq!(error, "a record of unknown kind 2 (4 bytes)");
    }

    #[test]
    fn undecodable_records_are_counted_and_the_first_named() {
        let mut undecodable = Undecodable::default();
        assert_eq!(undecodable.note(), None);
        for bytes in [&[9u8, 0, 0, 0][..], &[1, 0], &[99, 0, 0, 0, 0]] {
            undecodable.add(decode(bytes).unwrap_err());
        }
        assert_eq!(
            undecodable.note().as_deref(),
            Some("3 ring-buffer record(s) could not be decoded and were left out (first: a record of unknown kind 9 (4 bytes)): the kernel object and leaktrace disagree on the record format")
        );
    }

    #[test]
    fn kinds_round_trip_through_their_wire_value() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::try_from(kind as u32), Ok(kind));
        }
    }
}
