//! What the model benches share: the model they measure.

use aligner_model::{Config, Llama, hub};
use tch::{Device, Kind, nn};

/// The embedded SmolLM2-135M-Instruct in f32 when `cargo xtask setup` has imported it, else
/// random weights of its shapes (the speed does not depend on the values).
pub fn smollm2() -> (Llama, nn::VarStore) {
    let dir = hub::model_dir(&hub::SMOLLM2_135M_INSTRUCT);
    if hub::is_imported(&dir) {
        return Llama::load(&dir, Kind::Float, Device::Cpu).expect("load the embedded model");
    }
    eprintln!("the embedded model is not imported: random weights of its shapes");
    let config = Config {
        vocab_size: 49152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_layers: 30,
        num_heads: 9,
        num_kv_heads: 3,
        head_dim: 64,
        rope_theta: 100_000.0,
        max_position_embeddings: 8192,
        ..Config::tiny(49152)
    };
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), &config);
    (model, vs)
}
