//! Helpers shared by the integration tests.

use kiln_dockerfile::BuildGraph;
use serde_json::Value;

/// The graph as JSON without what legitimately changes when it is printed
/// and read back: source positions, warnings about the original's style, and
/// the references of stages that were skipped (they are printed as FROM only).
pub fn normalized(graph: &BuildGraph) -> Value {
    let mut v = serde_json::to_value(graph).unwrap();
    strip(&mut v);
    if let Some(stages) = v.get_mut("stages").and_then(Value::as_array_mut) {
        for st in stages {
            if st["needed"] == Value::Bool(false) {
                let obj = st.as_object_mut().unwrap();
                obj.remove("depends_on");
                obj.remove("images");
            }
        }
    }
    v
}

fn strip(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for k in ["line", "end_line", "span", "warnings"] {
                map.remove(k);
            }
            map.values_mut().for_each(strip);
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}
