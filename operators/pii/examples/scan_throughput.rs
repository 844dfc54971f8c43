fn main() {
    let samples = custody_pii::corpus::corpus(20_000, 1024, 0xBE7C);
    let bytes: usize = samples.iter().map(|s| s.text.len()).sum();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let n: usize = samples
            .iter()
            .map(|s| custody_pii::scan(&s.text).len())
            .sum();
        let secs = t.elapsed().as_secs_f64();
        println!("{n} spans, {:.0} MB/s", bytes as f64 / 1e6 / secs);
    }
}
