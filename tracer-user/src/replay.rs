//! Recordings of a trace (`leaktrace record -o FILE`) and their replay (`leaktrace report FILE`).
//!
//! A recording is the model's whole input: the analysis and the report are pure functions of the
//! events the model applied, the settings and a few facts about the run, so a recording analysed
//! again gives the report the live run gave (see [`RUN_SPECIFIC_FIELDS`]).
//!
//! Format (version [`FORMAT_VERSION`]): gzip-compressed JSON lines (gzip because `flate2` is
//! already a dependency for pprof files, and `zcat FILE | jq` reads it with stock tools), one
//! [`Entry`] a line:
//! - line 1: `{"header": Header}`: the format and leaktrace versions, the target, the settings;
//! - then `{"event": Event}` for every [`Event`] in the order the model applied it, goroutine
//!   snapshots included (`{"event": {"Goroutines": {...}}}`);
//! - last: `{"trailer": Trailer}`: why and when the trace ended, the tracer's probes, notes and
//!   resource use. A file without a trailer was cut short (leaktrace killed while recording, a
//!   full disk, a partial copy): its complete events up to the cut are replayed, and the replay
//!   says so ([`Replay::cut_short`]).
//!
//! The event format is `model::Event`'s serde form: a change to `Event` or the types in it is a
//! change of the recording format (bump [`FORMAT_VERSION`] when old files cannot be read any
//! more, and regenerate the checked-in recordings with `cargo xtask record-fixtures`).
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _, Result};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use crate::collect::EndReason;
use crate::model::goroutines::Goroutine;
use crate::model::{Event, EventSink, Model, Tap};
use crate::report::{TargetInfo, TracerInfo};

/// What the first line's `format` says.
pub const FORMAT_NAME: &str = "leaktrace-recording";
/// The version of the format this leaktrace writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// JSON report fields that belong to the run rather than to what was traced: the tracer's own
/// peak RSS and CPU time, measured after the live run's analysis. A replay reports the values
/// recorded at the end of the trace, so these (and only these) may differ between a live report
/// and the report of its recording.
pub const RUN_SPECIFIC_FIELDS: &[&str] = &["tracer.max_rss_kb", "tracer.cpu_ns"];

/// The first line of a recording.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    pub format_version: u32,
    /// The leaktrace that recorded it (`CARGO_PKG_VERSION`).
    pub leaktrace_version: String,
    pub target: TargetInfo,
    pub settings: RecordedSettings,
}

/// The settings the trace ran with: those the analysis uses, and those that shaped the events.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordedSettings {
    pub min_blocked_ns: u64,
    pub stack_after_ns: u64,
    pub max_frames: usize,
    /// `--duration`, if one was given.
    pub duration_ns: Option<u64>,
    /// How many wait sites the report lists.
    pub reported_wait_sites: usize,
}

/// The last line of a recording.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trailer {
    pub end: EndReason,
    /// When the trace started and ended (CLOCK_MONOTONIC ns).
    pub started_ns: u64,
    pub ended_ns: u64,
    /// When the trace started, wall clock (ns since the Unix epoch): the pprof's `time_nanos`.
    /// None in recordings made before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_unix_ns: Option<u64>,
    /// How many events the file holds (a check that none went missing).
    pub events: u64,
    /// The tracer's probes, notes and resource use as the live report had them (the resource
    /// use as of the end of the trace).
    pub tracer: TracerInfo,
}

/// One line of a recording.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    Header(Box<Header>),
    Event(Box<Event>),
    Trailer(Box<Trailer>),
}

/// `Entry::Event(Event::Goroutines { .. })` written from a borrowed snapshot: the same JSON.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum EntryRef<'a> {
    Event(GoroutinesRef<'a>),
}

#[derive(Serialize)]
enum GoroutinesRef<'a> {
    Goroutines {
        at_ns: u64,
        goroutines: &'a [Goroutine],
        unreadable: usize,
    },
}

/// Writes a recording. The model feeds it through its [`Tap`]; the first write error is kept
/// and returned by [`Recorder::finish`] (the trace itself goes on and is reported).
pub struct Recorder {
    out: Option<GzEncoder<BufWriter<File>>>,
    path: PathBuf,
    events: u64,
    error: Option<std::io::Error>,
}

impl Recorder {
    /// Creates (truncates) `path`: done before tracing, so an unwritable path fails at once.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("cannot write the recording to {}", path.display()))?;
        Ok(Recorder {
            // The fastest level: the recording is written from the collection loop, and a big
            // Go target's goroutine snapshots are megabytes a second.
            out: Some(GzEncoder::new(
                BufWriter::new(file),
                flate2::Compression::fast(),
            )),
            path: path.to_path_buf(),
            events: 0,
            error: None,
        })
    }

    /// A handle to share between the caller (header, trailer) and the model's tap.
    pub fn shared(self) -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(self))
    }

    /// The tap that feeds `recorder`.
    pub fn tap(recorder: &Arc<Mutex<Recorder>>) -> Tap {
        Tap::new(recorder.clone())
    }

    pub fn header(&mut self, header: &Header) {
        self.line(&Entry::Header(Box::new(header.clone())));
    }

    /// Writes the trailer and closes the file.
    pub fn finish(&mut self, mut trailer: Trailer) -> Result<()> {
        trailer.events = self.events;
        self.line(&Entry::Trailer(Box::new(trailer)));
        let result = match self.out.take() {
            Some(gz) => gz.finish().and_then(|mut buffered| buffered.flush()).err(),
            None => None,
        };
        if let Some(err) = self.error.take().or(result) {
            return Err(err)
                .with_context(|| format!("cannot write the recording to {}", self.path.display()));
        }
        Ok(())
    }

    fn line<T: Serialize>(&mut self, value: &T) {
        if self.error.is_some() {
            return;
        }
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let written = serde_json::to_writer(&mut *out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        if let Err(err) = written {
            self.error = Some(err);
        }
    }
}

impl EventSink for Recorder {
    fn event(&mut self, event: &Event) {
        self.events += 1;
        // Serializing borrows: `Entry` owns its event, so this writes the same JSON by hand.
        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum Borrowed<'a> {
            Event(&'a Event),
        }
        self.line(&Borrowed::Event(event));
    }

    fn goroutines(&mut self, at_ns: u64, goroutines: &[Goroutine], unreadable: usize) {
        self.events += 1;
        self.line(&EntryRef::Event(GoroutinesRef::Goroutines {
            at_ns,
            goroutines,
            unreadable,
        }));
    }
}

/// A recording read back: the model rebuilt from its events.
pub struct Replay {
    pub header: Header,
    pub model: Model,
    /// The recording's trailer, or for one cut short a trailer made up from its events: the
    /// trace as ending at its last event, the tracer's facts unknown but for a note that says
    /// so.
    pub trailer: Trailer,
    /// Why and where the recording was cut short (no trailer): its report covers the events
    /// before the cut only. None for a whole recording.
    pub cut_short: Option<String>,
}

/// Reads the recording at `path` and applies its events to a new model.
///
/// Errors: the file cannot be read, is not a recording (first line), was written by a format
/// this leaktrace does not read, has a line that is not an entry, or was cut short before its
/// first event. One cut short later is read up to the cut ([`Replay::cut_short`]).
pub fn load(path: &Path) -> Result<Replay> {
    let file = File::open(path)
        .with_context(|| format!("cannot read the recording {}", path.display()))?;
    read(BufReader::new(file)).map_err(|err| {
        // A JSON report is the likeliest wrong file (both come out of leaktrace as JSON):
        // checked only once the file failed as a recording, so a recording is read once.
        if is_report(path) {
            anyhow::anyhow!(
                "{} is a leaktrace JSON report, not a leaktrace recording: `leaktrace report` \
                 replays recordings made by `leaktrace record -o FILE`; `leaktrace diff OLD NEW` \
                 compares two JSON reports",
                path.display()
            )
        } else {
            err.context(format!("{} is not usable", path.display()))
        }
    })
}

/// Whether `path` holds a JSON report (`--format json`: an object with `target` and
/// `candidates`).
fn is_report(path: &Path) -> bool {
    File::open(path)
        .ok()
        .and_then(|file| serde_json::from_reader::<_, serde_json::Value>(BufReader::new(file)).ok())
        .is_some_and(|v| v.get("candidates").is_some() && v.get("target").is_some())
}

/// [`load`] from any reader: gzip-compressed (by its magic bytes) or plain JSON lines.
pub fn read(mut input: impl BufRead) -> Result<Replay> {
    let gzip = input
        .fill_buf()
        .context("cannot read it")?
        .starts_with(&[0x1f, 0x8b]);
    let lines: Box<dyn BufRead> = if gzip {
        Box::new(BufReader::new(MultiGzDecoder::new(input)))
    } else {
        Box::new(input)
    };
    let mut header = None;
    let mut trailer: Option<Trailer> = None;
    let mut model = Model::new();
    let mut events = 0u64;
    // Where a recording cut short ends: a read error (a gzip stream that stops or is damaged)
    // or a last line without its newline that is no entry. Everything before is whole.
    let mut cut: Option<String> = None;
    let mut lines = lines;
    let mut line = String::new();
    let mut number = 0;
    loop {
        number += 1;
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if header.is_some() && trailer.is_none() => {
                cut = Some(format!(
                    "it cannot be read past line {} ({err})",
                    number - 1
                ));
                break;
            }
            Err(err) => return Err(err).with_context(|| format!("cannot read line {number}")),
        }
        let ends_line = line.ends_with('\n');
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = match serde_json::from_str(&line) {
            Ok(entry) => entry,
            Err(err) if header.is_none() => {
                bail!("not a leaktrace recording (line 1 is not its header: {err})")
            }
            Err(_) if !ends_line && trailer.is_none() => {
                cut = Some(format!(
                    "it ends in the middle of line {number}, after line {}",
                    number - 1
                ));
                break;
            }
            Err(err) => bail!("line {number} is not a recording entry: {err}"),
        };
        if trailer.is_some() {
            bail!("line {number} follows the trailer, which ends a recording");
        }
        match entry {
            Entry::Header(found) => {
                if header.is_some() {
                    bail!("line {number}: a second header");
                }
                check_format(&found)?;
                header = Some(*found);
            }
            _ if header.is_none() => {
                bail!("not a leaktrace recording (line 1 is not its header)")
            }
            Entry::Event(event) => {
                events += 1;
                match *event {
                    Event::Goroutines {
                        at_ns,
                        goroutines,
                        unreadable,
                    } => model.apply_goroutines(at_ns, goroutines, unreadable),
                    event => model.apply(&event),
                }
            }
            Entry::Trailer(found) => trailer = Some(*found),
        }
    }
    let Some(header) = header else {
        bail!("not a leaktrace recording (it is empty)");
    };
    let Some(trailer) = trailer else {
        let cut =
            cut.unwrap_or_else(|| format!("it ends after line {} without its trailer", number - 1));
        if events == 0 {
            bail!("the recording was cut short before its first event ({cut}): nothing to report");
        }
        return Ok(cut_short(header, model, events, cut));
    };
    if trailer.events != events {
        bail!(
            "the trailer counts {} events but the file holds {events}",
            trailer.events
        );
    }
    Ok(Replay {
        header,
        model,
        trailer,
        cut_short: None,
    })
}

/// The replay of a recording cut short after `events` whole events (`why`: where and how it
/// ends): the trace as ending at its last event, and a note in the report that says what it
/// covers and what the missing trailer held.
fn cut_short(header: Header, model: Model, events: u64, why: String) -> Replay {
    let ended_ns = model.last_seen_ns;
    let started_ns = model.started_ns.unwrap_or(ended_ns).min(ended_ns);
    let why = format!(
        "the recording was cut short (leaktrace stopped while recording, or the file was \
         truncated): {why}; this report covers its first {events} events, the first {} of the \
         trace; how the trace ended, its probes, notes, --detail and resource use were in the \
         missing trailer",
        crate::units::human_ns(ended_ns - started_ns)
    );
    Replay {
        header,
        trailer: Trailer {
            end: EndReason::Interrupted,
            started_ns,
            ended_ns,
            // The header's time is when recording began, not the trace's start.
            started_unix_ns: None,
            events,
            tracer: TracerInfo {
                notes: vec![why.clone()],
                detail: None,
                ..TracerInfo::default()
            },
        },
        model,
        cut_short: Some(why),
    }
}

fn check_format(header: &Header) -> Result<()> {
    if header.format != FORMAT_NAME {
        bail!(
            "not a leaktrace recording (its header says format {:?})",
            header.format
        );
    }
    if header.format_version != FORMAT_VERSION {
        bail!(
            "recorded in format version {} by leaktrace {}; this leaktrace ({}) reads version {FORMAT_VERSION}: replay it with a leaktrace of that version",
            header.format_version,
            header.leaktrace_version,
            env!("CARGO_PKG_VERSION")
        );
    }
    Ok(())
}

/// Reads all of `input` (for tests of whole files).
pub fn read_bytes(bytes: &[u8]) -> Result<Replay> {
    read(BufReader::new(bytes))
}

/// `true` when `input` starts like a recording (gzip or a header line), to tell a recording from
/// a report in error messages.
pub fn looks_like_recording(mut input: impl Read) -> bool {
    let mut start = [0u8; 16];
    let n = input.read(&mut start).unwrap_or(0);
    start[..n].starts_with(&[0x1f, 0x8b]) || start[..n].starts_with(b"{\"header\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::frame;
    use crate::model::BlockedSince;

    #[test]
    fn a_json_report_is_named_as_one_with_the_commands_for_it() {
        let report =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recordings/thread_leak.json");
        let err = format!("{:#}", load(&report).map(|_| ()).unwrap_err());
        assert!(
            err.contains("thread_leak.json is a leaktrace JSON report, not a leaktrace recording"),
            "{err}"
        );
        assert!(err.contains("leaktrace record -o FILE"), "{err}");
        assert!(err.contains("leaktrace diff OLD NEW"), "{err}");
        // Other JSON is still only "not a recording".
        let other = std::env::temp_dir().join(format!(
            "leaktrace-not-a-report-{}.json",
            std::process::id()
        ));
        std::fs::write(&other, "{\"candidates\": []}").unwrap();
        let err = format!("{:#}", load(&other).map(|_| ()).unwrap_err());
        std::fs::remove_file(&other).unwrap();
        assert!(err.contains("not a leaktrace recording"), "{err}");
        assert!(!err.contains("JSON report"), "{err}");
    }

    fn header() -> Header {
        Header {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            leaktrace_version: "0.0.0".into(),
            target: TargetInfo {
                pid: 7,
                comm: "fixture".into(),
                exe: "/fixture".into(),
                container: None,
            },
            settings: RecordedSettings {
                min_blocked_ns: 1_000_000_000,
                stack_after_ns: 10_000_000,
                max_frames: 64,
                duration_ns: Some(2_000_000_000),
                reported_wait_sites: 20,
            },
        }
    }

    fn trailer() -> Trailer {
        Trailer {
            end: EndReason::Duration,
            started_ns: 1_000,
            ended_ns: 5_000,
            started_unix_ns: Some(1_764_500_000_000_000_000),
            events: 0,
            tracer: TracerInfo::default(),
        }
    }

    fn goroutine(goid: u64) -> Goroutine {
        Goroutine {
            goid,
            status: crate::model::goroutines::GoStatus::Waiting,
            wait_reason: Some("chan receive".into()),
            go_statement: Arc::new(frame("main.main")),
            start_function: Some("main.worker".into()),
            parent_goid: Some(1),
            stack: vec![frame("runtime.gopark"), frame("main.worker")].into(),
            tracking_seq: Some(3),
            waitsince_ns: None,
            waits_on: vec![0xc000_0100],
        }
    }

    /// Records through a model's tap, the way the collector feeds it.
    fn record(feed: impl FnOnce(&mut Model)) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!("leaktrace-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:?}.jsonl.gz", std::thread::current().id()));
        let recorder = Recorder::create(&path).unwrap().shared();
        recorder.lock().unwrap().header(&header());
        let mut model = Model {
            tap: Recorder::tap(&recorder),
            ..Model::new()
        };
        feed(&mut model);
        recorder.lock().unwrap().finish(trailer()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        bytes
    }

    #[test]
    fn a_recording_rebuilds_the_model_it_was_taken_from() {
        let mut live = Model::new();
        let bytes = record(|model| {
            model.apply(&Event::TraceStarted { at_ns: 1_000 });
            model.apply(&Event::Blocked {
                at_ns: 2_000,
                threads: vec![crate::model::tests::blocked(
                    3,
                    0x10,
                    BlockedSince::BeforeTrace,
                    &["main"],
                )],
            });
            model.apply_goroutines(3_000, vec![goroutine(5), goroutine(6)], 1);
            model.apply(&Event::Goroutines {
                at_ns: 4_000,
                goroutines: vec![goroutine(5)],
                unreadable: 0,
            });
            live = model.clone();
        });
        assert!(looks_like_recording(&bytes[..]));
        let replay = read_bytes(&bytes).unwrap();
        assert_eq!(replay.trailer.events, 4);
        assert_eq!(
            replay.trailer.started_unix_ns,
            Some(1_764_500_000_000_000_000),
            "the trace's wall-clock start, for the pprof's time"
        );
        assert_eq!(replay.header.target.comm, "fixture");
        assert_eq!(replay.model.futex.blocked, live.futex.blocked);
        assert_eq!(replay.model.started_ns, Some(1_000));
        assert_eq!(replay.model.last_seen_ns, 4_000);
        assert_eq!(replay.model.goroutines.snapshots, 2);
        assert_eq!(replay.model.goroutines.latest, live.goroutines.latest);
        assert_eq!(replay.model.goroutines.groups, live.goroutines.groups);
        assert_eq!(replay.model.goroutines.unreadable, 1);
    }

    #[test]
    fn a_borrowed_goroutine_snapshot_is_written_as_its_event() {
        let owned = serde_json::to_string(&Entry::Event(Box::new(Event::Goroutines {
            at_ns: 9,
            goroutines: vec![goroutine(1)],
            unreadable: 2,
        })))
        .unwrap();
        let borrowed = serde_json::to_string(&EntryRef::Event(GoroutinesRef::Goroutines {
            at_ns: 9,
            goroutines: &[goroutine(1)],
            unreadable: 2,
        }))
        .unwrap();
        assert_eq!(owned, borrowed);
    }

    #[test]
    fn a_recording_cut_short_is_read_up_to_the_cut_and_says_where() {
        let whole = record(|model| {
            model.apply(&Event::TraceStarted { at_ns: 1_000 });
            for i in 0..200u64 {
                model.apply(&Event::Blocked {
                    at_ns: 1_000_000 * (i + 1),
                    threads: vec![crate::model::tests::blocked(
                        3 + i as u32,
                        0x10,
                        BlockedSince::BeforeTrace,
                        &["main", "worker"],
                    )],
                });
            }
        });
        assert!(read_bytes(&whole).unwrap().cut_short.is_none());
        let mut plain = String::new();
        MultiGzDecoder::new(&whole[..])
            .read_to_string(&mut plain)
            .unwrap();
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines.len(), 203, "header, 201 events, trailer");

        // Without its trailer: every event, and the trace as ending at the last.
        let no_trailer = lines[..202].join("\n") + "\n";
        let replay = read_bytes(no_trailer.as_bytes()).unwrap();
        let why = replay.cut_short.expect("cut short");
        assert!(
            why.contains("it ends after line 202 without its trailer"),
            "{why}"
        );
        assert!(
            why.contains("covers its first 201 events, the first 200.0ms"),
            "{why}"
        );
        assert_eq!(replay.trailer.tracer.notes, [why]);
        assert_eq!(replay.trailer.events, 201);
        assert_eq!(
            (replay.trailer.started_ns, replay.trailer.ended_ns),
            (1_000, 200_000_000)
        );
        assert_eq!(replay.trailer.end, EndReason::Interrupted);
        let full = read_bytes(&whole).unwrap().model;
        assert_eq!(replay.model.futex.blocked, full.futex.blocked);
        assert_eq!(replay.model.last_seen_ns, full.last_seen_ns);

        // Cut in the middle of a line: the lines before it.
        let mid_line = &plain[..plain.find(lines[101]).unwrap() + 20];
        let why = read_bytes(mid_line.as_bytes()).unwrap().cut_short.unwrap();
        assert!(
            why.contains("it ends in the middle of line 102, after line 101"),
            "{why}"
        );
        assert!(why.contains("covers its first 100 events"), "{why}");

        // Cut anywhere in the gzip stream: up to the cut, or refused when no event is whole;
        // never a panic, never a silent success.
        let mut partial = 0;
        for len in (0..whole.len()).step_by(97) {
            match read_bytes(&whole[..len]) {
                Ok(replay) => {
                    let why = replay.cut_short.expect("a cut recording says so");
                    assert!(why.contains("cut short"), "{why}");
                    assert!(replay.trailer.events <= 201);
                    partial += 1;
                }
                Err(err) => {
                    let err = format!("{err:#}");
                    assert!(
                        err.contains("before its first event")
                            || err.contains("empty")
                            || err.contains("cannot read line 1")
                            || err.contains("not a leaktrace recording"),
                        "{len}: {err}"
                    );
                }
            }
        }
        assert!(partial > 0, "some cuts keep whole events");
    }

    #[test]
    fn a_trailer_without_the_wall_clock_start_still_reads() {
        // As recordings made before the field existed have it.
        let mut old = serde_json::to_value(Entry::Trailer(Box::new(trailer()))).unwrap();
        old["trailer"]
            .as_object_mut()
            .unwrap()
            .remove("started_unix_ns")
            .expect("written when known");
        let Entry::Trailer(read) = serde_json::from_value(old).unwrap() else {
            panic!("a trailer");
        };
        assert_eq!(read.started_unix_ns, None);
    }

    #[test]
    fn what_is_not_a_whole_recording_is_refused_with_why() {
        let error = |bytes: &[u8]| format!("{:#}", read_bytes(bytes).err().expect("an error"));
        assert!(error(b"").contains("empty"));
        assert!(error(b"{\"candidates\": []}\n").contains("not a leaktrace recording"));
        let mut lines = serde_json::to_string(&Entry::Header(Box::new(header()))).unwrap();
        lines.push('\n');
        assert!(error(lines.as_bytes()).contains("cut short"));
        let mut newer = header();
        newer.format_version = FORMAT_VERSION + 1;
        let newer = serde_json::to_string(&Entry::Header(Box::new(newer))).unwrap();
        assert!(error(newer.as_bytes()).contains("format version"));
        let garbled = format!("{lines}{{\"event\": 3}}\n");
        assert!(error(garbled.as_bytes()).contains("line 2"));
        let whole = record(|model| model.apply(&Event::TraceStarted { at_ns: 1 }));
        assert!(read_bytes(&whole).is_ok());
        assert!(read_bytes(&whole[..whole.len() / 2]).is_err());
    }
}
