#![no_main]
libfuzzer_sys::fuzz_target!(|d: &[u8]| edgewarden::fuzzing::ipc_frame(d));
