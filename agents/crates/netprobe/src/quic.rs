//! QUIC pieces: the server's self-signed certificate, the client's verifier that pins it by
//! SHA-256 fingerprint, and transport settings (windows sized for long fat paths, CUBIC or
//! quinn's experimental BBR).

use std::sync::Arc;
use std::time::Duration;

use quinn::rustls;
use quinn::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

/// ALPN of the probe.
pub const ALPN: &[u8] = b"labnode-probe/1";
/// The name in the certificate and the client's SNI.
pub const SERVER_NAME: &str = "labnode-probe";

/// A certificate and its key.
#[derive(Debug)]
pub struct Identity {
    /// DER certificate.
    pub cert: CertificateDer<'static>,
    /// PKCS#8 DER key.
    pub key: Vec<u8>,
}

impl Identity {
    /// A fresh self-signed certificate for [`SERVER_NAME`].
    pub fn generate() -> Result<Self, String> {
        let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .map_err(|e| format!("cannot make a certificate: {e}"))?;
        Ok(Identity {
            cert: ck.cert.der().clone(),
            key: ck.signing_key.serialize_der(),
        })
    }

    /// Loads `cert.der` and `key.der` from `dir`, making them first if they are missing, so a
    /// server keeps its fingerprint across restarts. Each file is written whole and durably
    /// (never half a key after a crash); the key is written first and the certificate,
    /// which is what clients pin, last, so a key without a certificate is the leftover of a
    /// crash while making them (no fingerprint was ever shown) and is made anew.
    pub fn load_or_create(dir: &std::path::Path) -> Result<Self, String> {
        let (c, k) = (dir.join("cert.der"), dir.join("key.der"));
        fn at(p: &std::path::Path) -> impl Fn(std::io::Error) -> String + '_ {
            move |e| format!("{}: {e}", p.display())
        }
        match (c.exists(), k.exists()) {
            (true, true) => {
                let cert = std::fs::read(&c).map_err(at(&c))?;
                let key = std::fs::read(&k).map_err(at(&k))?;
                return Ok(Identity {
                    cert: CertificateDer::from(cert),
                    key,
                });
            }
            (true, false) => {
                return Err(format!(
                    "{} has no {}: the key is lost; remove the certificate to make a new identity (clients must pin the new fingerprint)",
                    c.display(),
                    k.display()
                ));
            }
            (false, true) => {
                tracing::warn!(
                    "{} without a certificate (a crash while making them): making a new identity",
                    k.display()
                );
                std::fs::remove_file(&k).map_err(at(&k))?;
            }
            (false, false) => {}
        }
        labnode_core::files::create_dir_durably(dir, 0o700).map_err(at(dir))?;
        let id = Identity::generate()?;
        labnode_core::files::write_new_file_mode(dir, "key.der", &id.key, 0o600).map_err(at(&k))?;
        labnode_core::files::write_new_file_mode(dir, "cert.der", &id.cert, 0o644)
            .map_err(at(&c))?;
        Ok(id)
    }

    /// SHA-256 of the certificate, lowercase hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }
}

/// SHA-256 of a DER certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses a fingerprint as `net serve` prints it (hex; colons and case do not matter).
pub fn parse_fingerprint(s: &str) -> Result<String, String> {
    let hex: String = s
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "--fingerprint {s:?}: want the 64 hex digits `labnode net serve` printed"
        ));
    }
    Ok(hex)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which congestion controller a QUIC connection uses.
pub fn controller(
    name: &str,
) -> Result<Arc<dyn quinn::congestion::ControllerFactory + Send + Sync>, String> {
    match name {
        "cubic" => Ok(Arc::new(quinn::congestion::CubicConfig::default())),
        "bbr" => Ok(Arc::new(quinn::congestion::BbrConfig::default())),
        "newreno" | "reno" => Ok(Arc::new(quinn::congestion::NewRenoConfig::default())),
        other => Err(format!(
            "QUIC congestion control {other:?}: quinn has cubic, bbr and newreno"
        )),
    }
}

/// Transport settings for bulk transfer: windows for up to ~1 Gbit/s at 100 ms per stream.
pub fn transport(congestion: &str, streams: u32) -> Result<quinn::TransportConfig, String> {
    let mut t = quinn::TransportConfig::default();
    let stream_window: u32 = 16 << 20;
    t.stream_receive_window(stream_window.into())
        .receive_window((stream_window.saturating_mul(streams.max(1)).min(1 << 30)).into())
        .send_window(u64::from(stream_window) * u64::from(streams.max(1)))
        .max_concurrent_uni_streams((streams + 1).into())
        .max_idle_timeout(Some(
            Duration::from_secs(15)
                .try_into()
                .map_err(|e| format!("{e}"))?,
        ))
        .keep_alive_interval(Some(Duration::from_secs(2)))
        .enable_segmentation_offload(true)
        .congestion_controller_factory(controller(congestion)?);
    Ok(t)
}

/// The server's QUIC configuration.
pub fn server_config(
    id: &Identity,
    congestion: &str,
    streams: u32,
) -> Result<quinn::ServerConfig, String> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(
            vec![id.cert.clone()],
            PrivatePkcs8KeyDer::from(id.key.clone()).into(),
        )
        .map_err(|e| format!("the certificate: {e}"))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport(congestion, streams)?));
    Ok(cfg)
}

/// The client's QUIC configuration, trusting only the certificate with `fingerprint`.
pub fn client_config(
    fingerprint: &str,
    congestion: &str,
    streams: u32,
) -> Result<quinn::ClientConfig, String> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            fingerprint: fingerprint.to_owned(),
            provider: provider(),
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport(congestion, streams)?));
    Ok(cfg)
}

/// Accepts exactly one certificate, by SHA-256 fingerprint, and checks that the handshake
/// was signed with its key.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity);
        if got == self.fingerprint {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate has fingerprint {got}, not the pinned {}",
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether the kernel lets this UDP socket use generic segmentation offload.
pub fn gso_enabled(sock: &std::net::UdpSocket) -> bool {
    quinn::udp::UdpSocketState::new(sock.into()).is_ok_and(|s| s.max_gso_segments() > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints() {
        let id = Identity::generate().expect("cert");
        let fp = id.fingerprint();
        assert_eq!(fp.len(), 64);
        let colons: String = fp
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&colons).expect("colons"), fp);
        assert!(parse_fingerprint("abc").is_err());
        assert!(controller("vegas").is_err());
        server_config(&id, "bbr", 4).expect("server config");
        client_config(&fp, "cubic", 4).expect("client config");
    }

    #[test]
    fn identity_persists() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = Identity::load_or_create(&d.path().join("id")).expect("create");
        let b = Identity::load_or_create(&d.path().join("id")).expect("load");
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn a_crash_while_making_the_identity_never_strands_the_server() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("id");
        // A crash after the key, before the certificate: a new identity, not an error.
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("key.der"), b"half a ke").expect("write");
        let a = Identity::load_or_create(&dir).expect("made anew");
        assert_ne!(
            std::fs::read(dir.join("key.der")).expect("key"),
            b"half a ke"
        );
        let mode = std::fs::metadata(dir.join("key.der"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key.der is {mode:o}");
        assert_eq!(
            Identity::load_or_create(&dir).expect("load").fingerprint(),
            a.fingerprint()
        );
        // A certificate without its key is not silently replaced: clients pin it.
        std::fs::remove_file(dir.join("key.der")).expect("rm");
        let e = Identity::load_or_create(&dir).expect_err("lost key");
        assert!(e.contains("the key is lost"), "{e}");
    }
}
