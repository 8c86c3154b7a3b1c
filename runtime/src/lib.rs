//! `runtime`: our own thin layer over the PJRT C API. It loads official OpenXLA plugins,
//! compiles StableHLO text, moves buffers and runs executables on one or many devices.
