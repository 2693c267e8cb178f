//! A tour of kdnet's foundation in one second: a signal with two slots, a property that announces
//! its changes, a periodic timer that drives both, and a single-shot timer that ends the loop.
//!
//! Run: `cargo run --example signals_and_timers` (it takes no arguments; `--help` prints a usage
//! line, anything else exits with 2).

use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kdnet::{EventLoop, Property, ScopedConnection, Signal, Timer};

const USAGE: &str = "usage: signals_and_timers  (a one-second tour of signals, properties and timers; no arguments)";

fn main() -> Result<(), kdnet::LoopError> {
    if let Some(arg) = std::env::args().nth(1) {
        if arg == "-h" || arg == "--help" {
            // A closed stdout (`--help | head -c 0`) must not panic.
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return Ok(());
        }
        eprintln!("signals_and_timers: unexpected argument {arg:?}\n{USAGE}");
        std::process::exit(2);
    }
    let mut event_loop = EventLoop::new()?;
    let started = Instant::now();
    let elapsed = move || format!("[{:>4} ms]", started.elapsed().as_millis());

    // A signal carrying the tick number to every connected slot.
    let tick: Rc<Signal<u32>> = Rc::new(Signal::new());
    tick.connect(move |n| println!("{} tick {n}", elapsed()))
        .release();

    // A property: setting it to a new value emits value_changed; an equal value emits nothing.
    let temperature = Rc::new(Property::new(20));
    let _log_changes: ScopedConnection = temperature
        .value_changed
        .connect(move |celsius| println!("{} temperature is now {celsius} °C", elapsed()))
        .into();

    // Each tick sets the temperature to 20 + n/2: it only changes on every second tick, so
    // value_changed fires half as often as tick.
    let t = Rc::downgrade(&temperature);
    tick.connect(move |n| {
        if let Some(temperature) = t.upgrade() {
            temperature.set(20 + n / 2);
        }
    })
    .release();

    // A periodic timer drives the signal every 200 ms ...
    let mut count = 0;
    let emitter = Rc::clone(&tick);
    let _ticker = Timer::create_recurring(Duration::from_millis(200), move || {
        count += 1;
        emitter.emit(&count);
    })?;

    // ... and a single-shot timer ends the loop after a second.
    let handle = event_loop.handle();
    let _stop = Timer::create_timeout(Duration::from_millis(1_050), move || {
        println!("{} time is up, quitting", elapsed());
        handle.quit();
    })?;

    let code = event_loop.run();
    println!(
        "loop finished with code {code}; final temperature {} °C",
        temperature.get()
    );
    Ok(())
}
