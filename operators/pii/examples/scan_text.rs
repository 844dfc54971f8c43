//! Prints the spans the scanner finds in each argument, and the shape alternative each
//! match of the combined pattern came from: for triaging a miss or a false positive.
//!
//! `cargo run -p custody-pii --example scan_text -- "call 030 114289 or mail jane@x.de"`

fn main() {
    for text in std::env::args().skip(1) {
        println!("{text:?}");
        for s in custody_pii::scan(&text) {
            println!("  {:?} {:?}", s.kind, &text[s.start..s.end]);
        }
        println!("  shapes {:?}", custody_pii::classify_by_groups(&text));
    }
}
