//! The execution-provider choice, in one place: what each --device means and when CPU may stand in.

use crate::error::Failure;

/// Token budget on CoreML when --max-tokens is not given: half fair-esm's toks_per_batch (4096).
const COREML_MAX_TOKENS: usize = 2048;
/// Token budget on CUDA when --max-tokens is not given. Measured on an H200 with ESM-2 8M (float32, 50,000
/// synthetic nanobodies, two runs each): 2,048 tokens gave 4,660-4,810 seq/s, 8,192 gave 5,940-6,150,
/// 16,384 gave 5,910-6,940 and 65,536 gave 6,590-6,820. The 650M (float16, IO binding) ran 757 seq/s at
/// 2,048 and 924 at 16,384 (bench/results/2026-11-26-gpu-esm2_t33_650M-run4.md), and 922 at 16,384 against
/// 944 at 65,536 in run 2.
const CUDA_MAX_TOKENS: usize = 16384;
/// Budget x hidden size on CPU: one batch's activations stay small enough to live in cache while each
/// batch runs on its own thread (`config::default_parallel_batches`). Measured on ESM-2 8M (hidden 320), 2 threads:
/// 384-512 tokens ran 1.3x faster than 2048 with a third less peak RSS; the tiny model (hidden 32) was
/// fastest at 2048.
const CPU_TOKENS_TIMES_HIDDEN: usize = 131_072;

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

    /// The token budget of its batches when --max-tokens is not given, once the model's hidden size is known.
    pub fn default_max_tokens(self, hidden: Option<usize>) -> usize {
        match (self, hidden) {
            (Provider::Cpu, Some(hidden)) if hidden > 0 => {
                (CPU_TOKENS_TIMES_HIDDEN / hidden).clamp(256, 2048)
            }
            (Provider::Cpu, _) => 512,
            (Provider::Cuda, _) => CUDA_MAX_TOKENS,
            (Provider::CoreMl, _) => COREML_MAX_TOKENS,
        }
    }
}

/// The device asked for: one provider, or `auto` (CUDA, then CoreML, then CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
    CoreMl,
    Auto,
}

/// The device the user asked for and whether CPU may stand in for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRequest {
    pub device: Device,
    pub allow_cpu_fallback: bool,
}

impl Device {
    /// Its --device spelling, as the report records it.
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::CoreMl => "coreml",
            Device::Auto => "auto",
        }
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
        Device::Cpu => &[Provider::Cpu],
        Device::Cuda => &[Provider::Cuda],
        Device::CoreMl => &[Provider::CoreMl],
        Device::Auto => &[Provider::Cuda, Provider::CoreMl, Provider::Cpu],
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
    if request.allow_cpu_fallback && request.device != Device::Cpu {
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
        request.device.name(),
        reasons.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_token_budget_follows_the_provider_and_the_hidden_size() {
        // 131072 / 320 = 409.6 for ESM-2 8M; the tiny model's 4096 and the 650M's 102 are clamped.
        use Provider::*;
        assert_eq!(Cpu.default_max_tokens(Some(320)), 409);
        assert_eq!(Cpu.default_max_tokens(Some(32)), 2048);
        assert_eq!(Cpu.default_max_tokens(Some(1280)), 256);
        assert_eq!(Cpu.default_max_tokens(None), 512);
        assert_eq!(Cuda.default_max_tokens(Some(320)), 16384);
        assert_eq!(Cuda.default_max_tokens(None), 16384);
        assert_eq!(CoreMl.default_max_tokens(Some(320)), 2048);
        assert_eq!(CoreMl.default_max_tokens(None), 2048);
    }

    fn request(device: Device, allow_cpu_fallback: bool) -> DeviceRequest {
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
        let err = select(request(Device::Cuda, false), cpu_only).unwrap_err();
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
        let s = select(request(Device::Cuda, true), cpu_only).unwrap();
        assert_eq!(s.provider, Provider::Cpu);
        assert_eq!(s.passed_over.len(), 1);
        assert_eq!(s.passed_over[0].0, Provider::Cuda);
    }

    #[test]
    fn auto_tries_cuda_then_coreml_then_cpu() {
        let mut tried = Vec::new();
        let s = select(request(Device::Auto, false), |p| {
            tried.push(p);
            cpu_only(p)
        })
        .unwrap();
        assert_eq!(tried, vec![Provider::Cuda, Provider::CoreMl, Provider::Cpu]);
        assert_eq!(s.provider, Provider::Cpu);
        let s = select(request(Device::Auto, false), |_| Ok(())).unwrap();
        assert_eq!((s.provider, s.passed_over.len()), (Provider::Cuda, 0));
    }

    #[test]
    fn an_available_device_registers_without_fallback() {
        let s = select(request(Device::CoreMl, false), |_| Ok(())).unwrap();
        assert_eq!(
            s,
            Selection {
                provider: Provider::CoreMl,
                passed_over: vec![]
            }
        );
    }
}
