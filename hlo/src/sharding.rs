//! Device meshes with named axes and per-dimension partition specs.
//!
//! A `Mesh` such as `data=2, model=2` names the axes devices are laid out on; a
//! `PartitionSpec` says, for each tensor dimension, which mesh axes split it (none:
//! replicated along that dimension).

/// A logical device mesh, e.g. `[("data", 2), ("model", 2)]`. Devices are numbered in
/// row-major order over the axes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mesh {
    pub axes: Vec<(String, i64)>,
}

impl Mesh {
    pub fn new(axes: &[(&str, i64)]) -> Mesh {
        Mesh {
            axes: axes.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
        }
    }

    pub fn device_count(&self) -> i64 {
        self.axes.iter().map(|(_, s)| *s).product()
    }

    pub fn axis_size(&self, name: &str) -> Option<i64> {
        self.axes.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
    }
}

/// `data=2,model=2`, the form the command line takes.
impl std::fmt::Display for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.axes.iter().map(|(n, s)| format!("{n}={s}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// For each tensor dimension, the mesh axes it is split over (outermost first).
/// An empty list for every dimension means fully replicated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct PartitionSpec {
    pub dims: Vec<Vec<String>>,
}

impl PartitionSpec {
    /// Fully replicated over a tensor of the given rank.
    pub fn replicated(rank: usize) -> PartitionSpec {
        PartitionSpec {
            dims: vec![Vec::new(); rank],
        }
    }

    /// One optional axis per dimension: `PartitionSpec::new(&[None, Some("model")])`.
    pub fn new(dims: &[Option<&str>]) -> PartitionSpec {
        PartitionSpec {
            dims: dims
                .iter()
                .map(|d| d.iter().map(|s| s.to_string()).collect())
                .collect(),
        }
    }

    pub fn is_replicated(&self) -> bool {
        self.dims.iter().all(|d| d.is_empty())
    }
}
