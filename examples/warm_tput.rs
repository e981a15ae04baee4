use pyward::*;
use std::sync::Arc;
use std::time::Instant;
fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(4);
    let each: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(300);
    let native = NativeRuntime::new(NativeConfig::default()).unwrap();
    let warm = Arc::new(WarmRuntime::new(native, WarmConfig::default()));
    let policy = Arc::new(SandboxPolicy::load("strict").unwrap());
    warm.prestart(&policy).unwrap();
    let sub = Arc::new(Submission::code("pass"));
    for _ in 0..20 {
        warm.run(&policy, &sub).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (w, p, s) = (warm.clone(), policy.clone(), sub.clone());
            std::thread::spawn(move || {
                for _ in 0..each {
                    assert_eq!(w.run(&p, &s).unwrap().verdict, Verdict::Ok);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "{} calls, {threads} threads: {:.0} calls/s",
        threads * each,
        (threads * each) as f64 / el
    );
}
