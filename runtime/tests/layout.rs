//! Our `#[repr(C)]` declarations against the real header: a C program compiled with `gcc`
//! prints `sizeof`, `<name>_STRUCT_SIZE` and every field offset, and each must equal the
//! Rust value. The header is the one shipped next to the discovered CPU plugin
//! (`xla_cpu_pjrt/include/pjrt_c_api.h`). A missing header or gcc is a failure, not a skip.

mod common;

use runtime::ffi::{self, StructLayout};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn header_dir() -> PathBuf {
    let plugin = common::plugin_path();
    let dir = plugin
        .parent()
        .map(|p| p.join("include"))
        .unwrap_or_default();
    let header = dir.join("pjrt_c_api.h");
    assert!(
        header.is_file(),
        "layout test: the PJRT header {} (shipped with the xla-cpu-pjrt wheel next to {}) is missing",
        header.display(),
        plugin.display()
    );
    dir
}

fn c_program(layouts: &[StructLayout]) -> String {
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"pjrt_c_api.h\"\nint main(void) {\n",
    );
    c.push_str("  printf(\"version %d.%d\\n\", PJRT_API_MAJOR, PJRT_API_MINOR);\n");
    for l in layouts {
        let n = l.name;
        c.push_str(&format!("  printf(\"{n} sizeof %zu\\n\", sizeof({n}));\n"));
        if !l.prefix_only {
            c.push_str(&format!(
                "  printf(\"{n} STRUCT_SIZE %zu\\n\", (size_t){n}_STRUCT_SIZE);\n"
            ));
        }
        for (field, _) in &l.fields {
            let cf = ffi::c_field_name(n, field);
            c.push_str(&format!(
                "  printf(\"{n}.{field} %zu\\n\", offsetof({n}, {cf}));\n"
            ));
        }
    }
    c.push_str("  return 0;\n}\n");
    c
}

#[test]
fn rust_struct_layouts_match_the_c_header() {
    let include = header_dir();
    let layouts = ffi::declared_layouts();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("layout.c");
    let bin = dir.path().join("layout");
    std::fs::write(&src, c_program(&layouts)).unwrap();
    let gcc = Command::new("gcc")
        .arg("-std=c11")
        .arg("-I")
        .arg(&include)
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .output()
        .unwrap_or_else(|e| {
            panic!("layout test: cannot run gcc (install it: apt-get install gcc): {e}")
        });
    assert!(
        gcc.status.success(),
        "layout test: gcc failed:\n{}",
        String::from_utf8_lossy(&gcc.stderr)
    );
    let out = Command::new(&bin).output().unwrap();
    assert!(out.status.success());
    let c_values: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        c_values["version"],
        format!("{}.{}", ffi::HEADER_API_MAJOR, ffi::HEADER_API_MINOR),
        "the header next to the plugin is not the version ffi.rs follows"
    );

    let mut mismatches = Vec::new();
    let mut checked = 0;
    let mut check = |key: String, rust: usize| {
        checked += 1;
        match c_values.get(&key) {
            Some(c) if *c == rust.to_string() => {}
            other => mismatches.push(format!("{key}: C {other:?}, Rust {rust}")),
        }
    };
    for l in &layouts {
        if l.prefix_only {
            // Only a prefix of the function table is declared: it must not be longer.
            let c_size: usize = c_values[&format!("{} sizeof", l.name)].parse().unwrap();
            assert!(l.size <= c_size, "{} declared longer than in C", l.name);
        } else {
            check(format!("{} sizeof", l.name), l.size);
            check(format!("{} STRUCT_SIZE", l.name), l.struct_size);
        }
        for (field, offset) in &l.fields {
            check(format!("{}.{field}", l.name), *offset);
        }
    }
    assert!(
        mismatches.is_empty(),
        "layout mismatches:\n{}",
        mismatches.join("\n")
    );
    assert!(checked > 200, "only {checked} values checked");
}
