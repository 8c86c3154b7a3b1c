//! The one interface the rest of gptsan uses to reach a device. Only [`Client`] implements
//! it today; keeping the surface this small is what keeps FFI out of the model code.

use crate::buffer::Buffer;
use crate::client::Client;
use crate::error::Result;
use crate::executable::Executable;
use crate::options::CompileOptions;
use hlo::Literal;

/// Upload, download, compile, execute.
pub trait Backend: Send + Sync {
    /// Human description, e.g. "cpu (PJRT API 0.81, 4 devices)".
    fn describe(&self) -> String;
    /// Number of devices executions may use.
    fn device_count(&self) -> usize;
    /// Host -> device `device` (an index below [`Backend::device_count`]).
    fn upload(&self, literal: &Literal, device: usize) -> Result<Buffer>;
    /// Device -> host.
    fn download(&self, buffer: &Buffer) -> Result<Literal>;
    /// StableHLO text -> executable (through the executable cache when one is configured).
    fn compile(&self, mlir: &str, options: &CompileOptions) -> Result<Executable>;
    /// One argument list per device of the executable; one result list per device.
    fn execute(&self, executable: &Executable, args: &[Vec<&Buffer>]) -> Result<Vec<Vec<Buffer>>>;
}

impl Backend for Client {
    fn describe(&self) -> String {
        let (major, minor) = self.api_version();
        format!(
            "{} (PJRT API {major}.{minor}, {} devices)",
            self.platform_name(),
            self.device_count()
        )
    }

    fn device_count(&self) -> usize {
        Client::device_count(self)
    }

    fn upload(&self, literal: &Literal, device: usize) -> Result<Buffer> {
        Client::upload(self, literal, device)
    }

    fn download(&self, buffer: &Buffer) -> Result<Literal> {
        buffer.to_literal()
    }

    fn compile(&self, mlir: &str, options: &CompileOptions) -> Result<Executable> {
        match self.cache() {
            Some(cache) => Ok(self.compile_cached(cache, mlir, options)?.0),
            None => Client::compile(self, mlir, options),
        }
    }

    fn execute(&self, executable: &Executable, args: &[Vec<&Buffer>]) -> Result<Vec<Vec<Buffer>>> {
        executable.execute(args)
    }
}
