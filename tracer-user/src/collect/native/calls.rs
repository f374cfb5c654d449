//! Tracked calls that returned (`CallDone` records) as model events.
use tracer_common::{fd_kind, native_call, CallDone};

use super::deadline::Deadlines;
use crate::model::epoll::EpollEvent;
use crate::model::threads::ThreadEvent;
use crate::model::timerfd::TimerfdEvent;
use crate::model::{Event, Frame};

/// The event of a returned call, with the caller's `stack` where one was taken; None for a
/// call the model does not follow (or a clone that failed).
pub fn call_event(done: &CallDone, stack: Vec<Frame>, deadlines: &Deadlines) -> Option<Event> {
    let call = &done.call;
    let a = call.args;
    let at_ns = done.end_ns;
    let tid = done.tid;
    Some(match call.call {
        native_call::CLONE | native_call::CLONE3 | native_call::FORK | native_call::VFORK => {
            Event::Thread(ThreadEvent::Created {
                at_ns,
                creator: tid,
                tid: u32::try_from(done.ret).ok()?,
                flags: a[0],
                stack,
            })
        }
        native_call::EPOLL_CREATE => Event::Epoll(EpollEvent::Created {
            at_ns,
            tid,
            epfd: done.ret as i32,
            stack,
        }),
        native_call::EPOLL_CTL => Event::Epoll(EpollEvent::Ctl {
            at_ns,
            tid,
            epfd: a[0] as i32,
            op: a[1] as u32,
            fd: a[2] as i32,
            events: a[3] as u32,
            ret: done.ret,
        }),
        native_call::TIMERFD_CREATE => Event::Timerfd(TimerfdEvent::Created {
            at_ns,
            tid,
            fd: done.ret as i32,
            clockid: a[0] as i32,
            flags: a[1] as u32,
            stack,
        }),
        native_call::TIMERFD_SETTIME => {
            let flags = a[1] as u32;
            let (interval_ns, value_ns) = (a[2], a[3]);
            let deadline_ns = (done.ret == 0)
                .then(|| deadlines.of_settime(call.start_ns, flags, value_ns))
                .flatten();
            Event::Timerfd(TimerfdEvent::Set {
                at_ns: call.start_ns,
                tid,
                fd: a[0] as i32,
                flags,
                value_ns,
                interval_ns,
                deadline_ns,
                ret: done.ret,
                stack,
            })
        }
        native_call::TIMERFD_GETTIME => Event::Timerfd(TimerfdEvent::Gettime {
            at_ns,
            fd: a[0] as i32,
        }),
        native_call::TIMERFD_READ => Event::Timerfd(TimerfdEvent::Read {
            at_ns,
            tid,
            fd: a[0] as i32,
            ret: done.ret,
            expirations: done.value,
        }),
        // The kernel side tells closes apart by the fd's tracked kind (second argument).
        native_call::CLOSE if a[1] == fd_kind::TIMERFD as u64 => {
            Event::Timerfd(TimerfdEvent::Closed {
                at_ns,
                fd: a[0] as i32,
            })
        }
        native_call::CLOSE => Event::Epoll(EpollEvent::Closed {
            at_ns,
            epfd: a[0] as i32,
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use tracer_common::PendingCall;

    use super::*;

    fn done(call: u32, args: [u64; 4], ret: i64) -> CallDone {
        CallDone {
            tid: 7,
            call: PendingCall {
                start_ns: 1_000,
                args,
                tgid: 7,
                call,
            },
            end_ns: 2_000,
            ret,
            ..Default::default()
        }
    }

    #[test]
    fn returned_calls_become_their_events() {
        let deadlines = Deadlines::default();
        let event = |d: CallDone| call_event(&d, Vec::new(), &deadlines);
        // An armed timerfd's deadline counts from the call's start; a failed arm has none.
        let Some(Event::Timerfd(TimerfdEvent::Set {
            at_ns, deadline_ns, ..
        })) = event(done(native_call::TIMERFD_SETTIME, [5, 0, 0, 500], 0))
        else {
            panic!("not a settime");
        };
        assert_eq!((at_ns, deadline_ns), (1_000, Some(1_500)));
        let Some(Event::Timerfd(TimerfdEvent::Set { deadline_ns, .. })) =
            event(done(native_call::TIMERFD_SETTIME, [5, 0, 0, 500], -22))
        else {
            panic!("not a settime");
        };
        assert_eq!(deadline_ns, None);
        // A clone that failed creates nothing; one that returned a tid creates that thread.
        assert_eq!(event(done(native_call::CLONE3, [0; 4], -11)), None);
        assert!(matches!(
            event(done(native_call::CLONE, [0x3d0f00, 0, 0, 0], 42)),
            Some(Event::Thread(ThreadEvent::Created {
                tid: 42,
                creator: 7,
                ..
            }))
        ));
        // A close is a timerfd's or an epoll set's by the kind the kernel side tracked.
        assert_eq!(
            event(done(
                native_call::CLOSE,
                [9, fd_kind::TIMERFD as u64, 0, 0],
                0
            )),
            Some(Event::Timerfd(TimerfdEvent::Closed {
                at_ns: 2_000,
                fd: 9
            }))
        );
        assert_eq!(
            event(done(
                native_call::CLOSE,
                [9, fd_kind::EPOLL as u64, 0, 0],
                0
            )),
            Some(Event::Epoll(EpollEvent::Closed {
                at_ns: 2_000,
                epfd: 9
            }))
        );
        assert_eq!(event(done(native_call::EPOLL_WAIT, [0; 4], 0)), None);
    }
}
