//! `vela cluster-certs`: the files mutual TLS between a cluster's processes needs (ADR 0021):
//! a cluster CA (`ca.pem`, and `ca.key` to sign with) and a certificate and key per process
//! name (`NAME.pem`, `NAME.key`), each carrying the DNS name every node verifies the others by
//! (`vela-cluster`) and any extra names asked for. Files already there are kept, so the command
//! can be run again to add a process. Keys are written readable by the owner only.

use std::path::{Path, PathBuf};

use anyhow::Context;
use vela_proto::secret_file::write_private;

/// `vela cluster-certs` flags.
#[derive(clap::Args, Debug)]
pub struct ClusterCertsArgs {
    /// Names of the processes to make certificates for (files NAME.pem and NAME.key), e.g.
    /// controller-1 store-1 proxy-1. Letters, digits, `-` and `_`.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Directory of the CA and the certificates (made if missing).
    #[arg(long, value_name = "DIR", default_value = "./vela-cluster/tls")]
    pub dir: PathBuf,
    /// A further DNS name in every new certificate, e.g. the controllers' Service name that
    /// KEDA dials (repeatable).
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
}

/// What [`cluster_certificates`] did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    Written(PathBuf),
    Kept(PathBuf),
}

/// Runs `vela cluster-certs`: one line per file on standard output.
#[allow(clippy::print_stdout)] // the command's output
pub fn run(args: &ClusterCertsArgs) -> anyhow::Result<()> {
    for made in cluster_certificates(&args.dir, &args.names, &args.dns)? {
        match made {
            Made::Written(path) => println!("wrote {}", path.display()),
            Made::Kept(path) => println!("kept  {}", path.display()),
        }
    }
    Ok(())
}

/// Makes, under `dir`, the cluster CA if there is none and a certificate and key for each of
/// `names` that has none, with the DNS names `vela-cluster` and `extra_dns`.
pub fn cluster_certificates(
    dir: &Path,
    names: &[String],
    extra_dns: &[String],
) -> anyhow::Result<Vec<Made>> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    for name in names {
        anyhow::ensure!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "invalid process name {name:?}: use letters, digits, '-' and '_'"
        );
    }
    for dns in extra_dns {
        anyhow::ensure!(
            !dns.is_empty()
                && dns
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
            "invalid DNS name {dns:?}"
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut made = Vec::new();
    let ca_pem = dir.join("ca.pem");
    let ca_key_pem = dir.join("ca.key");
    // The CA's name and key are all an issuer needs: certificates made on a later run chain to
    // the CA certificate made on the first.
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "vela cluster CA");
    if ca_pem.exists() {
        made.push(Made::Kept(ca_pem.clone()));
    } else {
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write_private(&ca_key_pem, key.serialize_pem().as_bytes())?;
        std::fs::write(&ca_pem, cert.pem())
            .with_context(|| format!("cannot write {}", ca_pem.display()))?;
        made.push(Made::Written(ca_pem.clone()));
    }
    let mut issuer = None;
    for name in names {
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        if cert_path.exists() && key_path.exists() {
            made.push(Made::Kept(cert_path));
            continue;
        }
        if issuer.is_none() {
            let text = std::fs::read_to_string(&ca_key_pem).with_context(|| {
                format!(
                    "cannot sign a certificate for {name}: cannot read the CA key {}",
                    ca_key_pem.display()
                )
            })?;
            let key = KeyPair::from_pem(&text)
                .with_context(|| format!("{} is not a PEM private key", ca_key_pem.display()))?;
            issuer = Some(Issuer::new(params.clone(), key));
        }
        let Some(issuer) = &issuer else {
            unreachable!("the issuer was made above");
        };
        let mut dns = vec![vela_proto::cluster_tls::DEFAULT_SERVER_NAME.to_owned()];
        dns.extend(extra_dns.iter().cloned());
        let key = KeyPair::generate()?;
        let mut cert_params = CertificateParams::new(dns)?;
        cert_params
            .distinguished_name
            .push(DnType::CommonName, name.as_str());
        let cert = cert_params.signed_by(&key, issuer)?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, cert.pem())
            .with_context(|| format!("cannot write {}", cert_path.display()))?;
        made.push(Made::Written(cert_path));
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn makes_a_ca_and_a_certificate_per_name_and_keeps_them_on_a_second_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = cluster_certificates(
            dir.path(),
            &names(&["store-1", "proxy-1"]),
            &names(&["vela-controller.mq.svc"]),
        )
        .expect("made");
        assert_eq!(made.len(), 3);
        assert!(made.iter().all(|m| matches!(m, Made::Written(_))));
        for file in ["ca.key", "store-1.key", "proxy-1.key"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .expect("key")
                .permissions();
            #[cfg(unix)]
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
                0o600,
                "{file}"
            );
        }
        let first = std::fs::read(dir.path().join("store-1.pem")).expect("cert");
        let again =
            cluster_certificates(dir.path(), &names(&["store-1", "store-2"]), &[]).expect("made");
        assert_eq!(
            again,
            vec![
                Made::Kept(dir.path().join("ca.pem")),
                Made::Kept(dir.path().join("store-1.pem")),
                Made::Written(dir.path().join("store-2.pem")),
            ]
        );
        assert_eq!(
            std::fs::read(dir.path().join("store-1.pem")).expect("cert"),
            first
        );

        // Every certificate chains to the CA and names vela-cluster (and the extra name).
        let ca = std::fs::read(dir.path().join("ca.pem")).expect("ca");
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(&ca).expect("ca pem");
        let ca_cert = ca_pem.parse_x509().expect("ca cert");
        for (name, extra) in [("store-1", true), ("store-2", false)] {
            let text = std::fs::read(dir.path().join(format!("{name}.pem"))).expect("cert");
            let (_, pem) = x509_parser::pem::parse_x509_pem(&text).expect("pem");
            let cert = pem.parse_x509().expect("cert");
            cert.verify_signature(Some(ca_cert.public_key()))
                .expect("signed by the CA");
            let sans: Vec<String> = cert
                .subject_alternative_name()
                .expect("extension")
                .expect("SANs")
                .value
                .general_names
                .iter()
                .map(|n| n.to_string())
                .collect();
            assert!(
                sans.contains(&"DNSName(vela-cluster)".to_owned()),
                "{sans:?}"
            );
            assert_eq!(
                sans.contains(&"DNSName(vela-controller.mq.svc)".to_owned()),
                extra,
                "{name}: {sans:?}"
            );
        }
    }

    #[test]
    fn refuses_bad_names_and_a_missing_ca_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = cluster_certificates(dir.path(), &names(&["../etc"]), &[]).expect_err("bad name");
        assert!(err.to_string().contains("invalid process name"), "{err}");
        cluster_certificates(dir.path(), &names(&["a"]), &[]).expect("made");
        std::fs::remove_file(dir.path().join("ca.key")).expect("rm");
        let err = cluster_certificates(dir.path(), &names(&["b"]), &[]).expect_err("no CA key");
        assert!(
            format!("{err:#}").contains("cannot read the CA key"),
            "{err:#}"
        );
        // Nothing new to sign: the CA key is not needed.
        cluster_certificates(dir.path(), &names(&["a"]), &[]).expect("kept");
    }
}
