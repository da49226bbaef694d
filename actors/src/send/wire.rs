//! P-DATA framing straight from the source bytes, and reading the response.
//!
//! Sending bypasses `Association::send` (which would need the whole dataset
//! in a `Vec` of PDVs and copy it again into its own buffer): one reused
//! buffer receives PDU headers and file bytes read in place, several PDUs per
//! `write`, the command PDU packed in front of the first data PDU.
//! Receiving reads the socket directly too, so `TCP_QUICKACK` can be re-armed
//! around every `read` (the kernel falls back to delayed ACKs after each
//! exchange; a stock receiver that writes its response in two small writes
//! with Nagle on would otherwise wait ~40 ms for our ACK of the first one).

use std::io::{self, Read, Write};
use std::net::TcpStream;

use dicom_ul::pdu::{PDataValueType, Pdu, MAXIMUM_PDU_SIZE};

/// PDU header: type, reserved, u32 length.
const PDU_HEADER: usize = 6;
/// PDV item header: u32 length, context id, message control header.
const PDV_HEADER: usize = 6;
/// Both, in front of every fragment (one PDV per PDU).
const FRAME_HEADER: usize = PDU_HEADER + PDV_HEADER;
/// Bytes gathered before one `write` (several PDUs when they are small).
const WRITE_CHUNK: usize = 256 * 1024;
/// Initial receive buffer; responses are a few hundred bytes.
const READ_CHUNK: usize = 16 * 1024;
/// Room for the command PDU in front of the first data PDU.
const COMMAND_ROOM: usize = 4096;

const P_DATA_TF: u8 = 0x04;
const MCH_COMMAND: u8 = 0x01;
const MCH_LAST: u8 = 0x02;

/// Why a message could not be sent.
#[derive(Debug)]
pub(crate) enum SendFail {
    /// Reading the source failed. `cut`: bytes of the message were already
    /// written, so the association is mid-message and must be aborted.
    Source { error: io::Error, cut: bool },
    /// The socket failed: the association is cut.
    Net(io::Error),
}

/// Why no response could be read (the association must be aborted).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecvFail {
    #[error("{0}")]
    Net(io::Error),
    #[error("association aborted by the node ({0})")]
    Aborted(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// An association's byte stream: plain TCP or TLS over TCP. The framing code is
/// generic over it, so the plain path compiles to exactly what it was; the TCP
/// socket underneath is what quick ACKs are re-armed on.
pub(crate) trait Transport: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Transport for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// Re-arms quick ACKs (Linux; elsewhere a no-op).
pub(crate) fn quickack(stream: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // Best effort: an error (e.g. socket already closed) shows up on the read.
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

/// Framing state of one association: buffers are reused for every instance.
pub(crate) struct Wire {
    out: Vec<u8>,
    max_fragment: usize,
    rx: Vec<u8>,
    rx_len: usize,
    max_rx_pdu: usize,
}

impl Wire {
    /// `peer_max_pdu` as negotiated (dicom-ul turns "0 = unlimited" into ~4 GiB),
    /// `our_max_pdu` caps our fragments too and bounds what we accept.
    pub(crate) fn new(peer_max_pdu: u32, our_max_pdu: u32) -> Wire {
        let pdu = peer_max_pdu.min(our_max_pdu) as usize;
        // A PDU of length L carries one PDV of L - 6 data bytes.
        let max_fragment = pdu.saturating_sub(PDV_HEADER).max(1);
        let cap = WRITE_CHUNK.max(max_fragment + FRAME_HEADER + COMMAND_ROOM);
        Wire {
            out: vec![0; cap],
            max_fragment,
            rx: vec![0; READ_CHUNK],
            rx_len: 0,
            max_rx_pdu: our_max_pdu as usize,
        }
    }

    /// Data bytes per PDV.
    #[cfg(test)]
    pub(crate) fn max_fragment(&self) -> usize {
        self.max_fragment
    }

    /// Whether received bytes are waiting (then the stream is not at a PDU
    /// boundary that dicom-ul knows of: do not hand it back for release).
    pub(crate) fn has_pending_input(&self) -> bool {
        self.rx_len > 0
    }

    fn put_header(&mut self, at: usize, pc_id: u8, mch: u8, len: usize) {
        let pdv_len = (len + 2) as u32;
        let pdu_len = pdv_len + 4;
        let h = &mut self.out[at..at + FRAME_HEADER];
        h[0] = P_DATA_TF;
        h[1] = 0;
        h[2..6].copy_from_slice(&pdu_len.to_be_bytes());
        h[6..10].copy_from_slice(&pdv_len.to_be_bytes());
        h[10] = pc_id;
        h[11] = mch;
    }

    /// Sends one message: the command set as one Command PDV (last), then
    /// `len` bytes of `src` as Data PDVs of at most the peer's size, the final
    /// one marked last. `before_last` runs just before the write that carries
    /// the last fragment (until then the node cannot complete the message).
    pub(crate) fn send_message<S: Transport>(
        &mut self,
        stream: &mut S,
        pc_id: u8,
        command: &[u8],
        src: &mut dyn Read,
        len: u64,
        before_last: &mut dyn FnMut(),
    ) -> Result<(), SendFail> {
        if command.len() > self.max_fragment.min(COMMAND_ROOM - FRAME_HEADER) {
            return Err(SendFail::Source {
                error: io::Error::new(io::ErrorKind::InvalidInput, "command set too large"),
                cut: false,
            });
        }
        self.put_header(0, pc_id, MCH_COMMAND | MCH_LAST, command.len());
        self.out[FRAME_HEADER..FRAME_HEADER + command.len()].copy_from_slice(command);
        let mut pos = FRAME_HEADER + command.len();
        let mut remaining = len;
        let mut written = false;
        loop {
            let n = remaining.min(self.max_fragment as u64) as usize;
            let last = n as u64 == remaining;
            if pos + FRAME_HEADER + n > self.out.len() {
                stream.write_all(&self.out[..pos]).map_err(SendFail::Net)?;
                written = true;
                pos = 0;
            }
            self.put_header(pos, pc_id, if last { MCH_LAST } else { 0 }, n);
            let body = pos + FRAME_HEADER;
            src.read_exact(&mut self.out[body..body + n])
                .map_err(|error| SendFail::Source {
                    error,
                    cut: written,
                })?;
            pos = body + n;
            remaining -= n as u64;
            if last {
                break;
            }
        }
        before_last();
        stream.write_all(&self.out[..pos]).map_err(SendFail::Net)
    }

    /// Makes sure `need` bytes are buffered.
    fn fill<S: Transport>(&mut self, stream: &mut S, need: usize) -> Result<(), RecvFail> {
        if self.rx.len() < need {
            self.rx.resize(need, 0);
        }
        while self.rx_len < need {
            quickack(stream.tcp());
            match stream.read(&mut self.rx[self.rx_len..]) {
                Ok(0) => {
                    return Err(RecvFail::Net(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the node",
                    )))
                }
                Ok(n) => self.rx_len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(RecvFail::Net(e)),
            }
            quickack(stream.tcp());
        }
        Ok(())
    }

    /// Reads one PDU.
    pub(crate) fn read_pdu<S: Transport>(&mut self, stream: &mut S) -> Result<Pdu, RecvFail> {
        self.fill(stream, PDU_HEADER)?;
        let len = u32::from_be_bytes([self.rx[2], self.rx[3], self.rx[4], self.rx[5]]) as usize;
        if len > self.max_rx_pdu {
            return Err(RecvFail::Protocol(format!(
                "PDU of {len} bytes exceeds our maximum of {}",
                self.max_rx_pdu
            )));
        }
        let total = PDU_HEADER + len;
        self.fill(stream, total)?;
        let pdu = dicom_ul::pdu::read_pdu(&self.rx[..total], MAXIMUM_PDU_SIZE, false)
            .map_err(|e| RecvFail::Protocol(e.to_string()))?
            .ok_or_else(|| RecvFail::Protocol("truncated PDU".into()))?;
        self.rx.copy_within(total..self.rx_len, 0);
        self.rx_len -= total;
        Ok(pdu)
    }

    /// Reads PDUs until a complete command set arrived; returns its bytes.
    pub(crate) fn read_command<S: Transport>(
        &mut self,
        stream: &mut S,
    ) -> Result<Vec<u8>, RecvFail> {
        let mut command = Vec::new();
        loop {
            match self.read_pdu(stream)? {
                Pdu::PData { data } => {
                    for pdv in data {
                        if pdv.value_type == PDataValueType::Command {
                            command.extend_from_slice(&pdv.data);
                            if pdv.is_last {
                                return Ok(command);
                            }
                        }
                    }
                }
                Pdu::AbortRQ { source } => return Err(RecvFail::Aborted(format!("{source:?}"))),
                other => {
                    return Err(RecvFail::Protocol(format!(
                        "unexpected {} while waiting for a response",
                        other.short_description()
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::PDataValue;
    use std::net::TcpListener;

    /// Sends `data_len` bytes with a peer max PDU of `peer_max` and returns
    /// the PDUs as the peer parses them.
    fn round_trip(peer_max: u32, data_len: usize) -> (Vec<PDataValue>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut all = Vec::new();
            s.read_to_end(&mut all).expect("read");
            let mut buf = &all[..];
            let mut pdvs = Vec::new();
            while !buf.is_empty() {
                let len = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
                assert!(len <= peer_max, "PDU of {len} > {peer_max}");
                match dicom_ul::pdu::read_pdu(&mut buf, MAXIMUM_PDU_SIZE, true)
                    .expect("pdu")
                    .expect("complete")
                {
                    Pdu::PData { data } => pdvs.extend(data),
                    other => panic!("{other:?}"),
                }
            }
            pdvs
        });
        let mut stream = TcpStream::connect(addr).expect("connect");
        let data: Vec<u8> = (0..data_len).map(|i| (i % 251) as u8).collect();
        let mut wire = Wire::new(peer_max, 1 << 20);
        wire.send_message(
            &mut stream,
            3,
            b"CMD!",
            &mut &data[..],
            data.len() as u64,
            &mut || {},
        )
        .expect("send");
        drop(stream);
        (reader.join().expect("reader"), data)
    }

    #[test]
    fn command_first_then_fragments_within_the_peer_pdu_and_last_on_the_final() {
        for (peer_max, len) in [(1024, 5000), (16384, 600_000), (16384, 16378), (1024, 0)] {
            let (pdvs, data) = round_trip(peer_max, len);
            assert_eq!(pdvs[0].value_type, PDataValueType::Command);
            assert!(pdvs[0].is_last);
            assert_eq!(pdvs[0].data, b"CMD!");
            let frags = &pdvs[1..];
            assert!(!frags.is_empty());
            for (i, f) in frags.iter().enumerate() {
                assert_eq!(f.value_type, PDataValueType::Data);
                assert_eq!(f.presentation_context_id, 3);
                assert_eq!(f.is_last, i == frags.len() - 1);
                assert!(f.data.len() <= peer_max as usize - 6);
            }
            let joined: Vec<u8> = frags.iter().flat_map(|f| f.data.clone()).collect();
            assert_eq!(joined, data, "peer max {peer_max}, {len} bytes");
        }
    }

    #[test]
    fn unlimited_peer_pdu_is_capped_at_ours() {
        let wire = Wire::new(MAXIMUM_PDU_SIZE, 65536);
        assert_eq!(wire.max_fragment(), 65530);
    }

    #[test]
    fn a_source_error_before_the_first_write_leaves_the_association_intact() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk gone"))
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let drain = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
            sink.len()
        });
        let mut stream = TcpStream::connect(addr).expect("connect");
        let mut wire = Wire::new(16384, 65536);
        match wire.send_message(&mut stream, 1, b"C", &mut Failing, 100, &mut || {}) {
            Err(SendFail::Source { cut: false, .. }) => {}
            other => panic!("{other:?}"),
        }
        // Past the first write: cut.
        let mut big = (&[0u8; 300_000][..]).chain(Failing);
        match wire.send_message(&mut stream, 1, b"C", &mut big, 400_000, &mut || {}) {
            Err(SendFail::Source { cut: true, .. }) => {}
            other => panic!("{other:?}"),
        }
        drop(stream);
        assert!(drain.join().expect("drain") >= WRITE_CHUNK / 2);
    }
}
