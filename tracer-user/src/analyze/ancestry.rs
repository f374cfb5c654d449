//! Creation ancestry of goroutines: the `go` statement that made a goroutine is often in the
//! standard library (net/http's `go pc.readLoop()`), run by a goroutine the library started
//! itself (the transport's dialer), started in turn by the program's request. The chain is
//! followed, creator by creator, until a frame of the program's own code:
//! - the creation probe's sample of each `go` statement (`GoroutineModel::creations`): the
//!   creator's stack, and the creator's own gopc read from its g in the same probe hit;
//! - or, when the creator still lives, its goroutine (`parent_goid`, Go 1.21+) and its own
//!   `go` statement.
//!
//! The chain's stacks are joined innermost first; each creator stack ends in `runtime.goexit`,
//! which marks where one goroutine's part ends and its creator's begins.
use std::collections::HashSet;

use crate::model::goroutines::{is_runtime_frame, place, Goroutine, GoroutineModel};
use crate::model::Frame;

/// Goroutine levels followed at most (a loop of go statements or a deep pipeline ends here).
const MAX_LEVELS: usize = 8;

#[derive(Clone, Debug, PartialEq)]
pub struct CreationChain {
    /// The creator stacks joined, innermost first (a level whose creation was not sampled
    /// contributes its `go` statement alone).
    pub stack: Vec<Frame>,
    /// `function (file:line)` of each level's `go` statement, the goroutine's own first.
    pub go_statements: Vec<String>,
    /// The innermost frame of the program's own code in the chain, when it reached one.
    pub program_frame: Option<Frame>,
}

impl CreationChain {
    /// A sentence for the report when the chain went beyond the goroutine's own creator.
    pub fn describe(&self) -> Option<String> {
        if self.go_statements.len() < 2 {
            return None;
        }
        let mut text = format!("created at {}", self.go_statements[0]);
        for statement in &self.go_statements[1..] {
            text.push_str(&format!(", in a goroutine created at {statement}"));
        }
        match &self.program_frame {
            Some(frame) => text.push_str(&format!(
                ": the program's own code in this chain is {}",
                place(frame)
            )),
            None => text.push_str(
                ": no frame of the program's own code was seen (the creation probe is a sample: creations before the trace or outside its windows are not seen, and dead creators leave no other trace)",
            ),
        }
        Some(text)
    }
}

/// The `$GOROOT/src/` the binary was built with, from a runtime frame's file (e.g.
/// `runtime.goexit` in `$GOROOT/src/runtime/asm_amd64.s`).
fn goroot_src<'a>(frames: impl Iterator<Item = &'a Frame>) -> Option<String> {
    frames
        .filter(|f| {
            f.function
                .as_deref()
                .is_some_and(|n| n.starts_with("runtime."))
        })
        .find_map(|f| {
            let file = f.file.as_deref()?;
            let at = file.find("/src/runtime/")?;
            Some(file[..at + "/src/".len()].to_string())
        })
}

/// A frame of the Go standard library: its file is under `$GOROOT/src/`; without a known
/// GOROOT (trimmed paths), a package path whose first element has no dot and is not `main`
/// (standard packages are `net/http`, `crypto/tls`, ...; module paths have a dot).
fn is_std_frame(frame: &Frame, goroot_src: Option<&str>) -> bool {
    if let (Some(root), Some(file)) = (goroot_src, frame.file.as_deref()) {
        return file.starts_with(root);
    }
    let Some(function) = frame.function.as_deref() else {
        return true;
    };
    let package_start = function.rfind('/').map_or(0, |i| i + 1);
    let package_end = function[package_start..]
        .find('.')
        .map_or(function.len(), |i| package_start + i);
    let path = &function[..package_end];
    let first = path.split('/').next().unwrap_or(path);
    path != "main" && !first.contains('.')
}

/// The innermost frame of the program's own code (neither the runtime nor the standard
/// library).
pub fn program_frame<'a>(stack: &'a [Frame], goroot_src: Option<&str>) -> Option<&'a Frame> {
    stack
        .iter()
        .find(|f| !is_runtime_frame(f) && !is_std_frame(f, goroot_src))
}

/// Follows `goroutine`'s creation up its creators until the program's own code.
pub fn creation_chain(model: &GoroutineModel, goroutine: &Goroutine) -> CreationChain {
    let goroot = goroot_src(
        goroutine.stack.iter().chain(
            model
                .creations
                .get(&goroutine.go_statement.addr)
                .map(|c| c.creator_stack.iter())
                .into_iter()
                .flatten(),
        ),
    );
    let mut chain = CreationChain {
        stack: Vec::new(),
        go_statements: Vec::new(),
        program_frame: None,
    };
    let mut statement = (*goroutine.go_statement).clone();
    let mut parent = goroutine.parent_goid;
    let mut visited = HashSet::new();
    for _ in 0..MAX_LEVELS {
        if !visited.insert(statement.addr) {
            break;
        }
        let observed = model.creations.get(&statement.addr);
        let part = match observed {
            Some(seen) if !seen.creator_stack.is_empty() => seen.creator_stack.clone(),
            _ => vec![statement.clone()],
        };
        chain.go_statements.push(place(&statement));
        chain.program_frame = program_frame(&part, goroot.as_deref()).cloned();
        chain.stack.extend(part);
        if chain.program_frame.is_some() {
            break;
        }
        // The creator's own creation: from the creator itself while it lives, else from the
        // creation probe's record of this go statement (the creator's gopc, read from its g).
        let creator = parent.and_then(|id| model.latest.iter().find(|g| g.goid == id));
        match (creator, observed.map(|o| o.creator_gopc)) {
            // The main goroutine (and the runtime's own) were started by the runtime: their
            // `go` statement says nothing about the program.
            (Some(creator), _)
                if creator.go_statement.addr != 0
                    && !creator
                        .go_statement
                        .function
                        .as_deref()
                        .is_none_or(|f| f.starts_with("runtime.")) =>
            {
                statement = (*creator.go_statement).clone();
                parent = creator.parent_goid;
            }
            (_, Some(gopc)) if gopc != 0 => match model.creations.get(&gopc) {
                // Only a sampled creation names its statement (analysis has no symbolizer):
                // the innermost frame of its creator stack is the go statement.
                Some(seen) if !seen.creator_stack.is_empty() => {
                    statement = seen.creator_stack[0].clone();
                    statement.addr = gopc;
                    parent = None;
                }
                _ => break,
            },
            _ => break,
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::goroutines::tests::goroutine;

    const GOROOT: &str = "/usr/lib/go/src/";

    fn at(function: &str, file: &str, line: u32, addr: u64) -> Frame {
        Frame {
            function: Some(function.into()),
            file: Some(file.into()),
            line: Some(line),
            module: None,
            addr,
            inlined: false,
        }
    }

    fn std(function: &str, file: &str, addr: u64) -> Frame {
        at(function, &format!("{GOROOT}{file}"), 1, addr)
    }

    #[test]
    fn follows_library_goroutines_up_to_the_program() {
        let goexit = || std("runtime.goexit", "runtime/asm_amd64.s", 0x10);
        let read_loop_go = 0x1000;
        let dial_go = 0x2000;
        let mut leaked = goroutine(
            50,
            "net/http.(*Transport).dialConn",
            &["runtime.gopark", "net/http.(*persistConn).readLoop"],
            "select",
        );
        std::sync::Arc::make_mut(&mut leaked.go_statement).addr = read_loop_go;
        leaked.parent_goid = Some(49); // the dialer, dead by now
        let mut model = GoroutineModel::default();
        model.apply_snapshot(1, std::slice::from_ref(&leaked), 0, 1);
        // What the creation probe saw: readLoop's go statement in the dialer goroutine
        // (created at dial_go), and the dialer's go statement run by the program's request.
        model.creation_seen(
            read_loop_go,
            &[
                std(
                    "net/http.(*Transport).dialConn",
                    "net/http/transport.go",
                    read_loop_go,
                ),
                std(
                    "net/http.(*Transport).dialConnFor",
                    "net/http/transport.go",
                    0x1100,
                ),
                goexit(),
            ],
        );
        model.creator_seen(read_loop_go, dial_go);
        model.creation_seen(
            dial_go,
            &[
                std(
                    "net/http.(*Transport).queueForDial",
                    "net/http/transport.go",
                    dial_go,
                ),
                std("net/http.Get", "net/http/client.go", 0x2100),
                at("main.fetch", "/src/app/main.go", 20, 0x3000),
                goexit(),
            ],
        );
        let chain = creation_chain(&model, &leaked);
        assert_eq!(chain.go_statements.len(), 2, "{chain:?}");
        let program = chain.program_frame.as_ref().unwrap();
        assert_eq!(program.function.as_deref(), Some("main.fetch"));
        assert_eq!(chain.stack.len(), 7);
        let text = chain.describe().unwrap();
        assert!(text.contains("queueForDial"), "{text}");
        assert!(text.contains("main.fetch (main.go:20)"), "{text}");
    }

    #[test]
    fn the_main_goroutine_is_no_link() {
        let mut served = goroutine(
            9,
            "net/http.(*Server).Serve",
            &["runtime.gopark"],
            "IO wait",
        );
        served.parent_goid = Some(1);
        let main = goroutine(
            1,
            "runtime.newproc",
            &["runtime.gopark", "main.main"],
            "sleep",
        );
        let mut model = GoroutineModel::default();
        model.apply_snapshot(1, &[main, served.clone()], 0, 1);
        let chain = creation_chain(&model, &served);
        assert_eq!(chain.go_statements.len(), 1, "{chain:?}");
        assert!(chain.program_frame.is_none());
    }

    #[test]
    fn a_go_statement_in_the_program_ends_the_chain_at_once() {
        let g = goroutine(
            7,
            "main.handle",
            &["runtime.gopark", "main.handle.func1"],
            "chan receive",
        );
        let chain = creation_chain(&GoroutineModel::default(), &g);
        assert_eq!(chain.go_statements.len(), 1);
        assert!(chain.describe().is_none());
        assert_eq!(chain.stack.len(), 1);
    }

    #[test]
    fn standard_library_without_goroot_goes_by_package_path() {
        let frame = |f: &str| Frame {
            file: None,
            ..at(f, "", 1, 1)
        };
        assert!(is_std_frame(&frame("net/http.(*Transport).dialConn"), None));
        assert!(is_std_frame(&frame("fmt.Println"), None));
        assert!(!is_std_frame(&frame("main.fetch"), None));
        assert!(!is_std_frame(&frame("github.com/x/y.(*C).Do"), None));
    }
}
