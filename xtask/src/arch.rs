//! The architectures goro is tested on, and how cargo builds and runs tests for each.
//!
//! The host's own arch runs natively. Every other arch is built with Debian's cross gcc as the
//! linker and run under QEMU user mode. Both settings reach cargo as
//! `CARGO_TARGET_<TRIPLE>_LINKER` and `_RUNNER` environment variables, so a plain `cargo test`
//! outside the xtask is unaffected.

use std::process::Command;

/// An architecture of the test matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
    Riscv64,
}

impl Arch {
    /// Every arch, in the order `test-all-arches` runs them.
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Riscv64];

    /// Parses an arch name (`x86_64`, `aarch64`, `riscv64`) or its Rust target triple.
    pub fn parse(name: &str) -> crate::Result<Arch> {
        Arch::ALL
            .into_iter()
            .find(|arch| name == arch.name() || name == arch.triple())
            .ok_or_else(|| {
                format!("invalid arch `{name}`; expected x86_64, aarch64 or riscv64").into()
            })
    }

    /// Returns the arch's name as `std::env::consts::ARCH` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Riscv64 => "riscv64",
        }
    }

    /// Returns the Rust target triple for Linux with glibc.
    pub fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
            Arch::Riscv64 => "riscv64gc-unknown-linux-gnu",
        }
    }

    /// Returns whether this arch is the host's, so that its tests run without QEMU.
    pub fn is_native(self) -> bool {
        self.name() == std::env::consts::ARCH
    }

    /// Returns the GNU triple that Debian's cross packages and sysroots use.
    fn gnu_triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Aarch64 => "aarch64-linux-gnu",
            Arch::Riscv64 => "riscv64-linux-gnu",
        }
    }

    /// Returns the cross C compiler that links this arch's binaries.
    pub fn linker(self) -> String {
        format!("{}-gcc", self.gnu_triple())
    }

    /// Returns the QEMU user-mode command line that runs one of this arch's binaries when the
    /// binary's path is appended. `-L` names the sysroot of the cross libc, which contains the
    /// dynamic loader and the shared libraries.
    pub fn qemu_runner(self) -> String {
        format!("qemu-{} -L /usr/{}", self.name(), self.gnu_triple())
    }

    /// Returns the Debian packages that build and run this arch's tests when it is not the
    /// host's: QEMU, the cross gcc and the cross libc headers and libraries.
    pub fn cross_packages(self) -> [&'static str; 3] {
        match self {
            Arch::X86_64 => ["qemu-user", "gcc-x86-64-linux-gnu", "libc6-dev-amd64-cross"],
            Arch::Aarch64 => [
                "qemu-user",
                "gcc-aarch64-linux-gnu",
                "libc6-dev-arm64-cross",
            ],
            Arch::Riscv64 => [
                "qemu-user",
                "gcc-riscv64-linux-gnu",
                "libc6-dev-riscv64-cross",
            ],
        }
    }

    /// Sets the environment that makes cargo build and run this arch's tests: the linker and
    /// QEMU runner for a foreign arch, and `GORO_TEST_RUNNER`, which tests that re-execute
    /// their own binary put in front of it because there is no binfmt_misc to do it.
    /// `GORO_TEST_RUNNER` is removed natively, so a value inherited from the caller cannot
    /// send native tests through QEMU.
    pub fn configure(self, command: &mut Command) {
        if self.is_native() {
            command.env_remove("GORO_TEST_RUNNER");
            return;
        }
        let variable = format!(
            "CARGO_TARGET_{}",
            self.triple().to_uppercase().replace('-', "_")
        );
        command.env(format!("{variable}_LINKER"), self.linker());
        command.env(format!("{variable}_RUNNER"), self.qemu_runner());
        command.env("GORO_TEST_RUNNER", self.qemu_runner());
        // Keeps QEMU's fork from hanging (see docs/testing.md).
        command.env(QEMU_FORK_SAFE_GLIB.0, QEMU_FORK_SAFE_GLIB.1);
    }
}

/// The environment setting that makes QEMU user mode safe to fork.
///
/// QEMU forks the whole emulator when the guest forks, and glib's slice allocator, which
/// QEMU's code translator uses, is not fork-safe. A child forked while another guest thread
/// held the allocator's lock hangs at its first translation, before it can exec. Tests that
/// start processes hit this now and then. With this setting glib takes the memory from
/// malloc, whose locks glibc keeps consistent across a fork.
const QEMU_FORK_SAFE_GLIB: (&str, &str) = ("G_SLICE", "always-malloc");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_names_and_triples() {
        for arch in Arch::ALL {
            assert_eq!(Arch::parse(arch.name()).unwrap(), arch);
            assert_eq!(Arch::parse(arch.triple()).unwrap(), arch);
        }
        assert!(Arch::parse("riscv64gc").is_err());
    }

    #[test]
    fn configure_sets_cross_environment() {
        let foreign = Arch::ALL
            .into_iter()
            .find(|arch| !arch.is_native())
            .unwrap();
        let mut command = Command::new("cargo");
        foreign.configure(&mut command);
        let envs: Vec<(String, String)> = command
            .get_envs()
            .map(|(key, value)| {
                let value = value.expect("configure sets, never removes, for a foreign arch");
                (
                    key.to_string_lossy().into_owned(),
                    value.to_string_lossy().into_owned(),
                )
            })
            .collect();
        let prefix = format!(
            "CARGO_TARGET_{}",
            foreign.triple().to_uppercase().replace('-', "_")
        );
        assert!(
            envs.contains(&(format!("{prefix}_LINKER"), foreign.linker())),
            "{envs:?}"
        );
        assert!(
            envs.contains(&(format!("{prefix}_RUNNER"), foreign.qemu_runner())),
            "{envs:?}"
        );
        assert!(
            envs.contains(&("G_SLICE".into(), "always-malloc".into())),
            "{envs:?}"
        );
        assert!(
            envs.contains(&("GORO_TEST_RUNNER".into(), foreign.qemu_runner())),
            "{envs:?}"
        );
    }

    #[test]
    fn riscv64_runner_uses_debian_sysroot() {
        assert_eq!(
            Arch::Riscv64.qemu_runner(),
            "qemu-riscv64 -L /usr/riscv64-linux-gnu"
        );
        assert_eq!(
            format!(
                "CARGO_TARGET_{}",
                Arch::Riscv64.triple().to_uppercase().replace('-', "_")
            ),
            "CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU"
        );
    }

    #[test]
    fn configure_clears_runner_natively() {
        let native = Arch::ALL.into_iter().find(|arch| arch.is_native());
        let Some(native) = native else {
            return; // The host is not one of the three arches, so nothing runs natively.
        };
        let mut command = Command::new("cargo");
        native.configure(&mut command);
        let removed: Vec<_> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .collect();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].0, "GORO_TEST_RUNNER");
    }
}
