//! Which IPC compression a Flight stream between cluster processes uses, chosen by
//! the link it crosses (`[workers] exchange_compression`).
//!
//! On loopback, compressing costs CPU on both ends and saves nothing: the kernel
//! copies bytes faster than LZ4 makes them. Across hosts the network is the narrow
//! part, and LZ4 shrinks the typical exchange (strings, small integers) by 2–4×
//! for a few hundred MB/s of CPU per core. A stream is compressed by its sender
//! only; arrow's IPC reader undoes whatever the message header names, so readers
//! need no setting. Streams that go to clients (a client's endpoint, a result the
//! coordinator relays as it is) are never compressed: not every client's Arrow
//! library reads compressed IPC.

use std::net::SocketAddr;

use arrow_ipc::writer::IpcWriteOptions;
use arrow_ipc::CompressionType;

/// `[workers] exchange_compression`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkCompression {
    /// LZ4 when the reader is on another host, none on loopback or the same address.
    #[default]
    Auto,
    /// Never compress.
    None,
    /// Always LZ4 (frame format), wherever the reader is.
    Lz4,
}

impl LinkCompression {
    /// The variable that overrides the config's setting in a worker process.
    pub const ENV: &'static str = "QUIVER_EXCHANGE_COMPRESSION";

    /// The compression for a stream read by `peer` over a connection accepted on
    /// `local`. An unknown peer (not a TCP connection) is treated as local.
    pub fn for_link(
        self,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
    ) -> Option<CompressionType> {
        match self {
            Self::None => None,
            Self::Lz4 => Some(CompressionType::LZ4_FRAME),
            Self::Auto => {
                let peer = peer?.ip();
                let same_host = peer.is_loopback()
                    || local.is_some_and(|l| l.ip() == peer)
                    || peer.is_unspecified();
                (!same_host).then_some(CompressionType::LZ4_FRAME)
            }
        }
    }

    /// IPC write options for a stream over that link.
    pub fn write_options(
        self,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
    ) -> IpcWriteOptions {
        let options = IpcWriteOptions::default();
        match self.for_link(peer, local) {
            // Only fails for a compression arrow-ipc was built without; LZ4 is named in Cargo.toml.
            Some(c) => options
                .clone()
                .try_with_compression(Some(c))
                .unwrap_or(options),
            None => options,
        }
    }
}

impl std::str::FromStr for LinkCompression {
    type Err = String;

    fn from_str(word: &str) -> Result<Self, String> {
        match word.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "none" => Ok(Self::None),
            "lz4" => Ok(Self::Lz4),
            other => Err(format!(
                "exchange compression '{other}' is not one of auto, none, lz4"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer_data::PeerDecoder;
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use arrow_flight::FlightData;
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::record_batch::RecordBatch;
    use futures::TryStreamExt;
    use std::sync::Arc;

    fn addr(s: &str) -> Option<SocketAddr> {
        s.parse().ok()
    }

    #[test]
    fn auto_compresses_only_across_hosts() {
        let auto = LinkCompression::Auto;
        let local = addr("10.0.0.5:50051");
        assert_eq!(auto.for_link(addr("127.0.0.1:4000"), local), None);
        assert_eq!(auto.for_link(addr("[::1]:4000"), local), None);
        assert_eq!(auto.for_link(addr("10.0.0.5:4000"), local), None);
        assert_eq!(auto.for_link(None, local), None);
        assert_eq!(
            auto.for_link(addr("10.0.0.9:4000"), local),
            Some(CompressionType::LZ4_FRAME)
        );
        assert_eq!(
            LinkCompression::None.for_link(addr("10.0.0.9:1"), local),
            None
        );
        assert_eq!(
            LinkCompression::Lz4.for_link(addr("127.0.0.1:1"), local),
            Some(CompressionType::LZ4_FRAME)
        );
    }

    #[test]
    fn the_words_parse_and_others_are_named_in_the_error() {
        assert_eq!("LZ4".parse(), Ok(LinkCompression::Lz4));
        assert_eq!(" none".parse(), Ok(LinkCompression::None));
        assert_eq!("auto".parse(), Ok(LinkCompression::Auto));
        let err = "gzip".parse::<LinkCompression>().unwrap_err();
        assert!(err.contains("'gzip'"), "{err}");
    }

    async fn encode(batches: &[RecordBatch], c: LinkCompression) -> Vec<FlightData> {
        let owned: Vec<RecordBatch> = batches.to_vec();
        FlightDataEncoderBuilder::new()
            .with_options(c.write_options(addr("10.0.0.9:1"), addr("10.0.0.5:1")))
            .build(futures::stream::iter(owned.into_iter().map(Ok)))
            .try_collect()
            .await
            .expect("encode")
    }

    /// Across hosts the messages shrink, and the cluster's own decoder reads them back equal.
    #[tokio::test]
    async fn compressed_messages_are_smaller_and_decode_to_the_same_rows() {
        let batch = RecordBatch::try_from_iter(vec![
            (
                "k",
                Arc::new(Int64Array::from_iter_values(0..10_000)) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from_iter_values(
                    (0..10_000).map(|i| format!("carefully final deposits {}", i % 7)),
                )) as ArrayRef,
            ),
        ])
        .expect("batch");
        let input = vec![batch.clone(), batch];
        let size = |m: &[FlightData]| m.iter().map(|d| d.data_body.len()).sum::<usize>();
        let plain = encode(&input, LinkCompression::None).await;
        let lz4 = encode(&input, LinkCompression::Auto).await;
        assert!(
            size(&lz4) * 3 < size(&plain),
            "lz4 {} bytes against {} plain",
            size(&lz4),
            size(&plain)
        );
        let mut decoder = PeerDecoder::new();
        let mut output = vec![];
        for data in &lz4 {
            if let Some(b) = decoder.decode(data).expect("decode") {
                output.push(b);
            }
        }
        assert_eq!(output, input);
    }
}
