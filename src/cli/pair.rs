//! `spocgw pair vkey --config gateway.toml`: this appliance's witness verifier key, to give to the
//! peer appliance (its `pair.peer_witness`) and to officers who check cosignatures. With
//! `--name`, before any gateway.toml exists (first boot): the sealed `tpm:pair-witness` of the
//! TPM that FILE's `[tpm]` table names, under that name.

use std::path::Path;
use std::process::ExitCode;

use crate::audit::note::WitnessKey;
use crate::gateway::config::GatewayConfig;
use crate::gateway::pair::PairConfig;
use crate::keys::KeyStore;

pub fn vkey(config: &Path, name: Option<&str>) -> ExitCode {
    let run = || -> Result<String, String> {
        if let Some(name) = name {
            let tpm = super::tpm::read_tpm_table(config)?;
            let store = KeyStore::open(Some(&tpm)).map_err(|e| e.to_string())?;
            let r = crate::keys::KeyRef::Tpm(crate::tpm::provision::PAIR_WITNESS.into());
            let seed = store.secret(&r).map_err(|e| e.to_string())?;
            let key = WitnessKey::from_seed(&PairConfig::witness_name(name), &seed).map_err(|e| e.to_string())?;
            return Ok(key.vkey().text());
        }
        let cfg = GatewayConfig::load(config).map_err(|e| e.to_string())?;
        let pair = cfg.pair.as_ref().ok_or_else(|| format!("{}: no [pair] table", config.display()))?;
        // A sealed seed opens only in the measured state, on this appliance's TPM.
        let store = KeyStore::open(cfg.tpm.as_ref()).map_err(|e| e.to_string())?;
        let seed = store.secret(&pair.witness_key).map_err(|e| format!("pair.witness_key: {e}"))?;
        let key = WitnessKey::from_seed(&PairConfig::witness_name(&pair.name), &seed).map_err(|e| e.to_string())?;
        Ok(key.vkey().text())
    };
    match run() {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spocgw pair vkey: {e}");
            ExitCode::from(2)
        }
    }
}
