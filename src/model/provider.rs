//! The execution-provider choice, in one place: what each --device means and when CPU may stand in.

use crate::cli::DeviceArg;
use crate::config::{BatchDevice, DeviceRequest};
use crate::error::Failure;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cuda,
    CoreMl,
    Cpu,
}

impl Provider {
    /// ONNX Runtime's name for it, as the report records it.
    pub fn ort_name(self) -> &'static str {
        match self {
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::CoreMl => "CoreMLExecutionProvider",
            Provider::Cpu => "CPUExecutionProvider",
        }
    }

    /// Which default token budget its batches get.
    pub fn batch_device(self) -> BatchDevice {
        match self {
            Provider::Cuda => BatchDevice::Cuda,
            Provider::CoreMl => BatchDevice::CoreMl,
            Provider::Cpu => BatchDevice::Cpu,
        }
    }
}

pub fn device_name(device: DeviceArg) -> &'static str {
    match device {
        DeviceArg::Cpu => "cpu",
        DeviceArg::Cuda => "cuda",
        DeviceArg::Coreml => "coreml",
        DeviceArg::Auto => "auto",
    }
}

/// The provider that was registered and, when it is not the one asked for, why.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub provider: Provider,
    /// Providers tried before it and why each failed; non-empty means a fallback happened.
    pub passed_over: Vec<(Provider, String)>,
}

/// Tries providers in the order the request implies. `try_register` registers one provider or says why it cannot.
/// An explicit device that fails is an error unless the request allows CPU fallback; `auto` always ends on CPU.
pub fn select(
    request: DeviceRequest,
    mut try_register: impl FnMut(Provider) -> Result<(), String>,
) -> Result<Selection, Failure> {
    let order: &[Provider] = match request.device {
        DeviceArg::Cpu => &[Provider::Cpu],
        DeviceArg::Cuda => &[Provider::Cuda],
        DeviceArg::Coreml => &[Provider::CoreMl],
        DeviceArg::Auto => &[Provider::Cuda, Provider::CoreMl, Provider::Cpu],
    };
    let mut passed_over = Vec::new();
    for &provider in order {
        match try_register(provider) {
            Ok(()) => {
                return Ok(Selection {
                    provider,
                    passed_over,
                })
            }
            Err(reason) => passed_over.push((provider, reason)),
        }
    }
    let reasons: Vec<String> = passed_over
        .iter()
        .map(|(p, r)| format!("{}: {r}", p.ort_name()))
        .collect();
    if request.allow_cpu_fallback && request.device != DeviceArg::Cpu {
        try_register(Provider::Cpu)
            .map_err(|r| Failure::runtime(format!("CPU provider failed too: {r}")))?;
        return Ok(Selection {
            provider: Provider::Cpu,
            passed_over,
        });
    }
    Err(Failure::usage(format!(
        "--device {} was requested but cannot be used ({})\n  fix: for CUDA install the GPU runtime (scripts/setup_runtime.sh --gpu), for CoreML use the macOS runtime; \
or pass --device cpu; or allow a loud CPU fallback with --allow-cpu-fallback (config: allow_cpu_fallback: true)",
        device_name(request.device),
        reasons.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(device: DeviceArg, allow_cpu_fallback: bool) -> DeviceRequest {
        DeviceRequest {
            device,
            allow_cpu_fallback,
        }
    }

    fn cpu_only(p: Provider) -> Result<(), String> {
        if p == Provider::Cpu {
            Ok(())
        } else {
            Err("not in this ONNX Runtime build".into())
        }
    }

    #[test]
    fn cuda_on_a_cpu_only_runtime_is_an_error_by_default() {
        let err = select(request(DeviceArg::Cuda, false), cpu_only).unwrap_err();
        assert_eq!(err.kind, crate::error::FailureKind::Usage);
        assert!(
            err.message
                .contains("CUDAExecutionProvider: not in this ONNX Runtime build"),
            "{}",
            err.message
        );
        assert!(err.message.contains("--allow-cpu-fallback"));
    }

    #[test]
    fn cuda_falls_back_to_cpu_only_when_allowed_and_says_why() {
        let s = select(request(DeviceArg::Cuda, true), cpu_only).unwrap();
        assert_eq!(s.provider, Provider::Cpu);
        assert_eq!(s.passed_over.len(), 1);
        assert_eq!(s.passed_over[0].0, Provider::Cuda);
    }

    #[test]
    fn auto_tries_cuda_then_coreml_then_cpu() {
        let mut tried = Vec::new();
        let s = select(request(DeviceArg::Auto, false), |p| {
            tried.push(p);
            cpu_only(p)
        })
        .unwrap();
        assert_eq!(tried, vec![Provider::Cuda, Provider::CoreMl, Provider::Cpu]);
        assert_eq!(s.provider, Provider::Cpu);
        let s = select(request(DeviceArg::Auto, false), |_| Ok(())).unwrap();
        assert_eq!((s.provider, s.passed_over.len()), (Provider::Cuda, 0));
    }

    #[test]
    fn an_available_device_registers_without_fallback() {
        let s = select(request(DeviceArg::Coreml, false), |_| Ok(())).unwrap();
        assert_eq!(
            s,
            Selection {
                provider: Provider::CoreMl,
                passed_over: vec![]
            }
        );
    }
}
