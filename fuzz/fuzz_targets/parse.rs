//! Every parser on arbitrary bytes: sniffing, then each format's parser under small limits. A panic that escapes
//! a parser's guard, or a canonical document that fails its own consistency check, is a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| frostbyte_adapters::parse::fuzz_parse(data));
