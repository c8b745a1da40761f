//! One AFL++ target per entry of `vmshot::fuzzing::TARGETS`, chosen by name:
//! `vmshot-fuzz rfb` reads one input (AFL's persistent mode: many inputs per
//! process) and runs it through that target. Run outside AFL with an input on
//! standard input, it runs that input once: how a crash is replayed.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(&(_, target)) = vmshot::fuzzing::TARGETS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = vmshot::fuzzing::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: vmshot-fuzz TARGET < input; TARGET is one of {names:?}");
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        target(data);
    });
}
