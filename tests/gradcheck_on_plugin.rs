//! Every hlo::gradcheck case (each differentiable primitive, attention, cross-entropy, a
//! Switch block): the function and its VJP on the XLA CPU plugin agree with the
//! reference interpreter.
use hlo::gradcheck::{composite_cases, interpreter, op_cases};
use hlo::{Function, Literal};

fn on_device(f: &Function, args: &[Literal]) -> Result<Vec<Literal>, String> {
    let dev = gptsan::device::Device::shared().map_err(|e| e.to_string())?;
    dev.compile(f)
        .map_err(|e| format!("{e:#}"))?
        .run_literals(args)
        .map_err(|e| format!("{e:#}"))
}

#[test]
fn gradient_cases_agree_with_the_interpreter_on_the_cpu_plugin() {
    let mut cases = op_cases().unwrap();
    cases.extend(composite_cases().unwrap());
    let fails: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            c.compare(&interpreter, &on_device, 1e-9)
                .err()
                .map(|e| e.to_string())
        })
        .collect();
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
