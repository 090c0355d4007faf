//! Installing what builds and tests need: Debian packages through apt-get, Rust targets and
//! components through rustup.
//!
//! Each requirement is checked first (`dpkg -s`, `rustup target list --installed`,
//! `rustup component list --installed`), so a second run installs nothing. Without root or
//! without apt-get, the apt commands are printed instead and setup fails.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::arch::Arch;
use crate::process;

/// Debian packages that tests and benchmarks call: gdb to read a g's stack in a debugger,
/// curl and wrk as HTTP clients of the demo servers.
const TOOL_PACKAGES: [&str; 3] = ["gdb", "curl", "wrk"];

/// The Go toolchain, which the benchmarks compare against.
const BENCH_PACKAGES: [&str; 1] = ["golang-go"];

/// Something that has to be installed on the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    DebianPackage(&'static str),
    RustTarget(&'static str),
    RustComponent(&'static str),
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Requirement::DebianPackage(name) => write!(formatter, "Debian package {name}"),
            Requirement::RustTarget(name) => write!(formatter, "Rust target {name}"),
            Requirement::RustComponent(name) => write!(formatter, "rustup component {name}"),
        }
    }
}

/// How much [`ensure`] prints about requirements that are already met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// One line per requirement, as `cargo xtask setup` prints.
    Everything,
    /// One line in all when nothing is missing, as other commands print before they start.
    MissingOnly,
}

/// Everything `cargo xtask setup` installs; `bench` adds the benchmarks' Go toolchain.
pub fn all_requirements(bench: bool) -> Vec<Requirement> {
    let mut requirements = test_requirements(&Arch::ALL);
    push_unique(&mut requirements, Requirement::RustComponent("rustfmt"));
    push_unique(&mut requirements, Requirement::RustComponent("clippy"));
    if bench {
        for package in BENCH_PACKAGES {
            push_unique(&mut requirements, Requirement::DebianPackage(package));
        }
    }
    requirements
}

/// Returns what running the tests of `arches` needs: QEMU, cross gcc, cross libc and the Rust target
/// for each arch other than the host's, and the tools that tests call.
pub fn test_requirements(arches: &[Arch]) -> Vec<Requirement> {
    let mut requirements = cross_requirements(arches);
    for package in TOOL_PACKAGES {
        push_unique(&mut requirements, Requirement::DebianPackage(package));
    }
    requirements
}

/// Returns what building and running code for the foreign ones of `arches` needs.
pub fn cross_requirements(arches: &[Arch]) -> Vec<Requirement> {
    let mut requirements = Vec::new();
    for arch in arches.iter().filter(|arch| !arch.is_native()) {
        for package in arch.cross_packages() {
            push_unique(&mut requirements, Requirement::DebianPackage(package));
        }
        push_unique(&mut requirements, Requirement::RustTarget(arch.triple()));
    }
    requirements
}

/// Adds `requirement` to `requirements` unless it is already listed.
pub fn push_unique(requirements: &mut Vec<Requirement>, requirement: Requirement) {
    if !requirements.contains(&requirement) {
        requirements.push(requirement);
    }
}

/// Installs whichever of `requirements` are missing. Fails, naming what is missing and the
/// commands that install it, when it cannot install them itself.
pub fn ensure(requirements: &[Requirement], report: Report) -> crate::Result<()> {
    let installed = Installed::query()?;
    let missing: Vec<Requirement> = requirements
        .iter()
        .copied()
        .filter(|requirement| !installed.has(*requirement))
        .collect();
    if report == Report::Everything {
        for requirement in requirements {
            let state = if missing.contains(requirement) {
                "missing"
            } else {
                "present"
            };
            println!("setup: {state:<8}{requirement}");
        }
    }
    if missing.is_empty() {
        println!("setup: all {} prerequisites present", requirements.len());
        return Ok(());
    }
    if report == Report::MissingOnly {
        for requirement in &missing {
            println!("setup: missing {requirement}");
        }
    }

    // Both run even if one fails, so that one run names everything to install.
    let rust = install_rust_parts(&missing);
    let debian = install_debian_packages(&missing);
    let errors: Vec<String> = [rust, debian]
        .into_iter()
        .filter_map(|result| result.err().map(|error| error.to_string()))
        .collect();
    if !errors.is_empty() {
        return Err(errors.join("; ").into());
    }

    let installed = Installed::query()?;
    let still_missing: Vec<String> = missing
        .iter()
        .filter(|requirement| !installed.has(**requirement))
        .map(Requirement::to_string)
        .collect();
    if !still_missing.is_empty() {
        return Err(format!(
            "still missing after installing: {}",
            still_missing.join(", ")
        )
        .into());
    }
    println!("setup: installed {} prerequisites", missing.len());
    Ok(())
}

fn install_rust_parts(missing: &[Requirement]) -> crate::Result<()> {
    let targets: Vec<&str> = missing
        .iter()
        .filter_map(|requirement| match requirement {
            Requirement::RustTarget(name) => Some(*name),
            _ => None,
        })
        .collect();
    let components: Vec<&str> = missing
        .iter()
        .filter_map(|requirement| match requirement {
            Requirement::RustComponent(name) => Some(*name),
            _ => None,
        })
        .collect();
    if targets.is_empty() && components.is_empty() {
        return Ok(());
    }
    if !has_rustup() {
        let names: Vec<&str> = targets.iter().chain(&components).copied().collect();
        return Err(format!(
            "rustup not found, so {} cannot be added; install rustup (https://rustup.rs) or \
             add them to your toolchain another way",
            names.join(", ")
        )
        .into());
    }
    for (kind, names) in [("target", targets), ("component", components)] {
        if names.is_empty() {
            continue;
        }
        let status = process::run(Command::new("rustup").args([kind, "add"]).args(&names))?;
        if !status.success() {
            return Err(format!(
                "`rustup {kind} add {}` failed with {status}",
                names.join(" ")
            )
            .into());
        }
    }
    Ok(())
}

fn install_debian_packages(missing: &[Requirement]) -> crate::Result<()> {
    let packages: Vec<&str> = missing
        .iter()
        .filter_map(|requirement| match requirement {
            Requirement::DebianPackage(name) => Some(*name),
            _ => None,
        })
        .collect();
    if packages.is_empty() {
        return Ok(());
    }
    let has_apt = Path::new("/usr/bin/apt-get").exists()
        || succeeds(Command::new("apt-get").arg("--version"));
    if !has_apt || !is_root() {
        let reason = if has_apt {
            "not running as root"
        } else {
            "apt-get not found"
        };
        println!("setup: {reason}; run these commands to install the missing packages:");
        println!("    sudo apt-get update");
        println!(
            "    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
            packages.join(" ")
        );
        if !has_apt {
            println!("(on a system without apt-get, install the equivalent packages)");
        }
        return Err(format!("missing Debian packages: {}", packages.join(", ")).into());
    }

    let mut update = Command::new("apt-get");
    update
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive");
    let status = process::run(&mut update)?;
    if !status.success() {
        return Err(format!("`apt-get update` failed with {status}").into());
    }
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    let status = process::run(&mut install)?;
    if !status.success() {
        return Err(format!(
            "`apt-get install {}` failed with {status}",
            packages.join(" ")
        )
        .into());
    }
    Ok(())
}

/// The Rust targets and components installed on this machine, queried once per [`ensure`]
/// call. Debian packages are queried one by one.
struct Installed {
    /// `None` when rustup is missing: the active toolchain's targets are then unknown.
    rust_targets: Option<String>,
    rust_components: Option<String>,
}

impl Installed {
    fn query() -> crate::Result<Installed> {
        if !has_rustup() {
            return Ok(Installed {
                rust_targets: None,
                rust_components: None,
            });
        }
        let targets = process::capture_stdout(Command::new("rustup").args([
            "target",
            "list",
            "--installed",
        ]))?;
        let components = process::capture_stdout(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
        ]))?;
        Ok(Installed {
            rust_targets: Some(targets),
            rust_components: Some(components),
        })
    }

    fn has(&self, requirement: Requirement) -> bool {
        match requirement {
            Requirement::DebianPackage(name) => debian_package_installed(name),
            Requirement::RustTarget(name) => self
                .rust_targets
                .as_deref()
                .is_some_and(|list| list.lines().any(|line| line.trim() == name)),
            // Components are listed with the host triple appended: `clippy-x86_64-unknown-linux-gnu`.
            Requirement::RustComponent(name) => {
                self.rust_components.as_deref().is_some_and(|list| {
                    list.lines().any(|line| {
                        line.trim() == name || line.trim().starts_with(&format!("{name}-"))
                    })
                })
            }
        }
    }
}

/// Returns whether dpkg reports `name` as installed. `dpkg -s` also succeeds for a removed package
/// whose configuration files remain, so the `Status:` line decides.
fn debian_package_installed(name: &str) -> bool {
    let Ok(output) = Command::new("dpkg")
        .args(["-s", name])
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    output.status.success()
        && String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|line| line.starts_with("Status:") && line.ends_with("install ok installed"))
}

fn has_rustup() -> bool {
    succeeds(Command::new("rustup").arg("--version"))
}

fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Returns whether this process runs with effective user id 0, read from `/proc/self/status`
/// (`Uid:` lists the real, effective, saved and filesystem ids).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| {
                ids.split_whitespace()
                    .nth(1)
                    .map(|effective| effective == "0")
            })
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_requirements_cover_the_brief() {
        let requirements = all_requirements(false);
        for package in ["gdb", "curl", "wrk"] {
            assert!(
                requirements.contains(&Requirement::DebianPackage(package)),
                "{package}"
            );
        }
        for arch in Arch::ALL.into_iter().filter(|arch| !arch.is_native()) {
            assert!(requirements.contains(&Requirement::RustTarget(arch.triple())));
            for package in arch.cross_packages() {
                assert!(
                    requirements.contains(&Requirement::DebianPackage(package)),
                    "{package}"
                );
            }
        }
        assert!(!requirements.contains(&Requirement::DebianPackage("golang-go")));
        assert!(all_requirements(true).contains(&Requirement::DebianPackage("golang-go")));
    }

    #[test]
    fn requirements_are_unique() {
        let requirements = all_requirements(true);
        for (index, requirement) in requirements.iter().enumerate() {
            assert!(
                !requirements[index + 1..].contains(requirement),
                "{requirement} twice"
            );
        }
    }

    #[test]
    fn native_arch_needs_no_cross_tools() {
        let Some(native) = Arch::ALL.into_iter().find(|arch| arch.is_native()) else {
            return; // The host is not one of the three arches.
        };
        assert!(cross_requirements(&[native]).is_empty());
    }

    #[test]
    fn dpkg_check_rejects_unknown_package() {
        assert!(!debian_package_installed("goro-no-such-package"));
    }
}
