//! Sharding attributes in the two syntaxes XLA accepts.
//!
//! * Shardy (the default): the mesh is a module-level symbol `sdy.mesh @mesh = <["data"=2]>`
//!   and a value's sharding names mesh axes per dimension:
//!   `#sdy.sharding<@mesh, [{"data"}, {}]>`.
//! * GSPMD (legacy): a string attribute `mhlo.sharding = "{devices=[2,1]0,1}"` that lists,
//!   for every tile of the tensor, which device holds it. Mesh axes a spec does not use
//!   replicate the tensor; they become a trailing tile dimension marked
//!   `last_tile_dim_replicate`.

use super::EmitError;
use crate::sharding::{Mesh, PartitionSpec};

/// Symbol name of the one mesh a module declares.
pub const MESH_SYMBOL: &str = "mesh";

/// Checks `spec` against the mesh and the tensor rank. `what` names the annotated value
/// in errors ("parameter 0 (wte)", "node 12").
pub fn validate(
    spec: &PartitionSpec,
    mesh: &Mesh,
    rank: usize,
    what: &str,
) -> Result<(), EmitError> {
    if spec.dims.len() != rank {
        return Err(EmitError::SpecRank {
            what: what.to_string(),
            spec_rank: spec.dims.len(),
            rank,
        });
    }
    let mut seen: Vec<&str> = Vec::new();
    for axis in spec.dims.iter().flatten() {
        if mesh.axis_size(axis).is_none() {
            return Err(EmitError::UnknownAxis {
                what: what.to_string(),
                axis: axis.clone(),
                mesh: mesh_description(mesh),
            });
        }
        if seen.contains(&axis.as_str()) {
            return Err(EmitError::RepeatedAxis {
                what: what.to_string(),
                axis: axis.clone(),
            });
        }
        seen.push(axis);
    }
    Ok(())
}

/// `data=2, model=2`, for error messages.
fn mesh_description(mesh: &Mesh) -> String {
    let axes: Vec<String> = mesh.axes.iter().map(|(n, s)| format!("{n}={s}")).collect();
    format!("[{}]", axes.join(", "))
}

/// The module-level Shardy mesh declaration: `sdy.mesh @mesh = <["data"=2, "model"=2]>`.
pub fn shardy_mesh(mesh: &Mesh) -> String {
    let axes: Vec<String> = mesh
        .axes
        .iter()
        .map(|(n, s)| format!("{}={s}", quote(n)))
        .collect();
    format!("sdy.mesh @{MESH_SYMBOL} = <[{}]>", axes.join(", "))
}

/// The body shared by argument/result attributes and `sdy.sharding_constraint`:
/// `<@mesh, [{"data"}, {}]>`. Every dimension is closed (`{}` means replicated, not "let
/// the partitioner choose").
pub fn shardy_tensor_sharding(spec: &PartitionSpec) -> String {
    let dims: Vec<String> = spec
        .dims
        .iter()
        .map(|axes| {
            let quoted: Vec<String> = axes.iter().map(|a| quote(a)).collect();
            format!("{{{}}}", quoted.join(", "))
        })
        .collect();
    format!("<@{MESH_SYMBOL}, [{}]>", dims.join(", "))
}

/// The attribute entry for an argument or result: `sdy.sharding = #sdy.sharding<...>`.
pub fn shardy_attr(spec: &PartitionSpec) -> String {
    format!(
        "sdy.sharding = #sdy.sharding{}",
        shardy_tensor_sharding(spec)
    )
}

/// The GSPMD sharding string (without the surrounding quotes of the attribute), e.g.
/// `{devices=[2,1,2]0,2,1,3 last_tile_dim_replicate}`. The spec must be validated.
pub fn gspmd_sharding(spec: &PartitionSpec, mesh: &Mesh) -> String {
    let axis_index = |name: &str| {
        mesh.axes
            .iter()
            .position(|(n, _)| n == name)
            .expect("spec validated against the mesh")
    };
    // Tile dimensions: one per tensor dimension (the product of its axes), then one for
    // the unused axes, over which each tile is replicated.
    let dim_axes: Vec<Vec<usize>> = spec
        .dims
        .iter()
        .map(|axes| axes.iter().map(|a| axis_index(a)).collect())
        .collect();
    let used: Vec<usize> = dim_axes.iter().flatten().copied().collect();
    let unused: Vec<usize> = (0..mesh.axes.len()).filter(|i| !used.contains(i)).collect();
    let size = |axes: &[usize]| -> i64 { axes.iter().map(|&i| mesh.axes[i].1).product() };
    let mut tiles: Vec<i64> = dim_axes.iter().map(|a| size(a)).collect();
    let replicas = size(&unused);
    if tiles.iter().product::<i64>() == 1 {
        return "{replicated}".to_string();
    }
    let mut groups = dim_axes.clone();
    if replicas > 1 {
        tiles.push(replicas);
        groups.push(unused);
    }
    // Walk the tiles in row-major order. A tile index along one tile dimension splits into
    // coordinates of that dimension's mesh axes (outermost first); the device is the
    // row-major position of the full mesh coordinate.
    let total: i64 = tiles.iter().product();
    let mut devices = Vec::with_capacity(total as usize);
    for linear in 0..total {
        let mut coord = vec![0i64; mesh.axes.len()];
        let mut rest = linear;
        for (t, axes) in tiles.iter().zip(&groups).rev() {
            let mut idx = rest % t;
            rest /= t;
            for &a in axes.iter().rev() {
                let s = mesh.axes[a].1;
                coord[a] = idx % s;
                idx /= s;
            }
        }
        let device = coord
            .iter()
            .zip(&mesh.axes)
            .fold(0, |acc, (c, (_, s))| acc * s + c);
        devices.push(device.to_string());
    }
    let tiles: Vec<String> = tiles.iter().map(|t| t.to_string()).collect();
    let suffix = if replicas > 1 {
        " last_tile_dim_replicate"
    } else {
        ""
    };
    format!(
        "{{devices=[{}]{}{suffix}}}",
        tiles.join(","),
        devices.join(",")
    )
}

/// The attribute entry for an argument or result: `mhlo.sharding = "{...}"`.
pub fn gspmd_attr(spec: &PartitionSpec, mesh: &Mesh) -> String {
    format!("mhlo.sharding = {}", quote(&gspmd_sharding(spec, mesh)))
}

/// An MLIR string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dims: &[&[&str]]) -> PartitionSpec {
        PartitionSpec {
            dims: dims
                .iter()
                .map(|d| d.iter().map(|s| s.to_string()).collect())
                .collect(),
        }
    }

    #[test]
    fn shardy_syntax() {
        let mesh = Mesh::new(&[("data", 2), ("model", 2)]);
        assert_eq!(
            shardy_mesh(&mesh),
            r#"sdy.mesh @mesh = <["data"=2, "model"=2]>"#
        );
        assert_eq!(
            shardy_attr(&spec(&[&["data"], &[]])),
            r#"sdy.sharding = #sdy.sharding<@mesh, [{"data"}, {}]>"#
        );
        assert_eq!(
            shardy_tensor_sharding(&spec(&[&["data", "model"]])),
            r#"<@mesh, [{"data", "model"}]>"#
        );
    }

    #[test]
    fn gspmd_tile_assignments() {
        let mesh = Mesh::new(&[("data", 2), ("model", 2)]);
        // Both axes used, in mesh order: devices in row-major order.
        assert_eq!(
            gspmd_sharding(&spec(&[&["data"], &["model"]]), &mesh),
            "{devices=[2,2]0,1,2,3}"
        );
        // Axes swapped: the tile array is the transposed device mesh.
        assert_eq!(
            gspmd_sharding(&spec(&[&["model"], &["data"]]), &mesh),
            "{devices=[2,2]0,2,1,3}"
        );
        // Only `model` used: replicated over `data` (the trailing tile dimension).
        assert_eq!(
            gspmd_sharding(&spec(&[&[], &["model"]]), &mesh),
            "{devices=[1,2,2]0,2,1,3 last_tile_dim_replicate}"
        );
        assert_eq!(
            gspmd_sharding(&spec(&[&["data"], &[]]), &mesh),
            "{devices=[2,1,2]0,1,2,3 last_tile_dim_replicate}"
        );
        // One dimension over both axes.
        assert_eq!(
            gspmd_sharding(&spec(&[&["model", "data"], &[]]), &mesh),
            "{devices=[4,1]0,2,1,3}"
        );
        assert_eq!(gspmd_sharding(&spec(&[&[], &[]]), &mesh), "{replicated}");
        let m4 = Mesh::new(&[("model", 4)]);
        assert_eq!(
            gspmd_sharding(&spec(&[&[], &["model"]]), &m4),
            "{devices=[1,4]0,1,2,3}"
        );
    }

    #[test]
    fn validation_errors() {
        let mesh = Mesh::new(&[("data", 2)]);
        let err = validate(&spec(&[&["model"]]), &mesh, 1, "parameter 0 (w)").unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter 0 (w): sharding names mesh axis \"model\", which the mesh [data=2] does not have"
        );
        assert!(matches!(
            validate(&spec(&[&["data"], &["data"]]), &mesh, 2, "x"),
            Err(EmitError::RepeatedAxis { .. })
        ));
        assert!(matches!(
            validate(&spec(&[&["data"]]), &mesh, 2, "x"),
            Err(EmitError::SpecRank { .. })
        ));
    }
}
