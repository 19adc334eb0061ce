use super::*;
use std::io::BufRead;

#[test]
fn metadata_lines_are_bounded() {
    // A line of well over MAX_LINE bytes is refused (the bound is MAX_LINE plus one buffer) instead of growing without end
    // (metadata.tsv linked to /dev/zero on a hostile disk).
    let mut data = b"short\n".to_vec();
    data.extend(std::iter::repeat_n(b'z', 2 * MAX_LINE));
    data.push(b'\n');
    let mut r = LineBounded { inner: io::BufReader::with_capacity(4096, data.as_slice()), since_newline: 0 };
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "short\n");
    line.clear();
    let err = r.read_line(&mut line).unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
    // Many ordinary lines pass, however many bytes in total.
    let many: Vec<u8> = (0..(3 * MAX_LINE / 10)).flat_map(|i| format!("{:09}\n", i % 1000).into_bytes()).collect();
    let r = LineBounded { inner: io::BufReader::with_capacity(4096, many.as_slice()), since_newline: 0 };
    assert_eq!(r.lines().count(), 3 * MAX_LINE / 10);
}
