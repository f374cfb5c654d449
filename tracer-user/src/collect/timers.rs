//! Reads the Go runtime's timer heaps with each goroutine snapshot and hands the model a
//! symbolized snapshot (no probes: nothing is added to the target's timer calls).
use std::collections::HashMap;
use std::time::Duration;

use crate::goruntime::GoProcess;
use crate::model::timers::{GoTimer, TimerKind};
use crate::model::{Event, Frame, Model};
use crate::symbolize::Symbolizer;

#[derive(Default)]
pub struct TimerReads {
    reads: u64,
    /// The slowest read: how long, and how many timers.
    slowest: Option<(Duration, usize)>,
    notes: Vec<String>,
    callbacks: HashMap<u64, Frame>,
}

impl TimerReads {
    pub fn snapshot(&mut self, go: &GoProcess, symbolizer: &mut Symbolizer, model: &mut Model) {
        if let Some(why) = go.timers_unreadable() {
            let note = format!("Go timers are not analysed: {why}");
            if !self.notes.contains(&note) {
                self.notes.push(note);
            }
            return;
        }
        let snapshot = match go.timers() {
            Ok(snapshot) => snapshot,
            Err(err) => {
                let note = format!("reading Go timers failed: {err:#}");
                if !self.notes.contains(&note) {
                    self.notes.push(note);
                }
                return;
            }
        };
        self.reads += 1;
        let count = snapshot.timers.len();
        if self
            .slowest
            .is_none_or(|(slowest, _)| snapshot.elapsed > slowest)
        {
            self.slowest = Some((snapshot.elapsed, count));
        }
        let timers = snapshot
            .timers
            .iter()
            .map(|t| GoTimer {
                start_key: if go.timer_start_key_is_arg() {
                    t.arg_data
                } else {
                    t.addr
                },
                addr: t.addr,
                kind: TimerKind::of(t.func.as_deref(), t.period_ns),
                func: t.func.clone(),
                callback: t.callback_pc.map(|pc| {
                    self.callbacks
                        .entry(pc)
                        .or_insert_with(|| {
                            // The function's entry: its outermost frame names the function and
                            // the line it is declared on.
                            symbolizer
                                .user_stack(&[pc])
                                .pop()
                                .unwrap_or_else(|| Frame::unknown(pc))
                        })
                        .clone()
                }),
                when_ns: t.when_ns,
                period_ns: t.period_ns,
                chan_full: t.chan_full,
                blocked: t.blocked,
                stopped: t.stopped,
            })
            .collect();
        model.apply(&Event::GoTimers {
            at_ns: snapshot.taken_at_ns,
            timers,
            unreadable: snapshot.torn,
        });
    }

    pub fn finish(self, notes: &mut Vec<String>) {
        notes.extend(self.notes);
        if let Some((elapsed, count)) = self.slowest {
            notes.push(format!(
                "Go timers read {} times from the P heaps (no probes); the slowest read took {:.2} ms for {count} timers",
                self.reads,
                elapsed.as_secs_f64() * 1e3
            ));
        }
    }
}
