//! WebSocket frame boundaries in a relayed byte stream (RFC 6455 §5.2), so the relay can stay
//! byte-exact and still inject a close frame between two frames, never inside one.

/// Where one direction of a WebSocket stream is: in a frame header or in a payload.
#[derive(Debug, Clone, Default)]
pub struct FrameTracker {
    header: [u8; 14],
    have: usize,
    remaining: u64,
}

impl FrameTracker {
    /// Advance over bytes that were relayed.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining.min(data.len() as u64)) as usize;
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            self.header[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if let Some(len) = self.header_len() {
                if self.have == len {
                    self.remaining = self.payload_len();
                    self.have = 0;
                }
            }
        }
    }

    /// Between two frames: a frame may be written here.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// The whole header's length, once its first two bytes are known.
    fn header_len(&self) -> Option<usize> {
        if self.have < 2 {
            return None;
        }
        let b1 = self.header[1];
        let extended = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        Some(2 + extended + mask)
    }

    fn payload_len(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        }
    }
}

/// A close frame with `code` and `reason` (reason at most 123 bytes), masked when it goes to a
/// server (client-to-server frames must be masked; a zero key leaves the payload as is).
pub fn close_frame(code: u16, reason: &str, masked: bool) -> Vec<u8> {
    let reason = &reason.as_bytes()[..(0..=reason.len().min(123))
        .rev()
        .find(|&i| reason.is_char_boundary(i))
        .unwrap_or(0)];
    let len = 2 + reason.len();
    let mut frame = Vec::with_capacity(2 + 4 + len);
    frame.push(0x88);
    // `len` <= 125 by construction.
    frame.push(if masked { 0x80 } else { 0 } | len as u8);
    if masked {
        frame.extend_from_slice(&[0, 0, 0, 0]);
    }
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload_len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x82];
        let mask_bit = if masked { 0x80 } else { 0 };
        if payload_len < 126 {
            f.push(mask_bit | payload_len as u8);
        } else if payload_len <= 0xffff {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(payload_len as u16).to_be_bytes());
        } else {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(payload_len as u64).to_be_bytes());
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(7u8, payload_len));
        f
    }

    #[test]
    fn tracks_boundaries_byte_by_byte_for_every_length_form() {
        for (len, masked) in [
            (0, false),
            (5, true),
            (125, false),
            (126, true),
            (70_000, false),
        ] {
            let f = frame(len, masked);
            let mut t = FrameTracker::default();
            for (i, b) in f.iter().enumerate() {
                assert!(
                    t.at_boundary() == (i == 0),
                    "len {len} masked {masked} at byte {i}"
                );
                t.feed(std::slice::from_ref(b));
            }
            assert!(t.at_boundary(), "len {len}: after the frame");
        }
    }

    #[test]
    fn tracks_several_frames_in_one_chunk_and_split_chunks() {
        let mut all = frame(3, false);
        all.extend(frame(300, true));
        all.extend(frame(0, false));
        let mut t = FrameTracker::default();
        t.feed(&all[..10]);
        assert!(!t.at_boundary());
        t.feed(&all[10..]);
        assert!(t.at_boundary());
    }

    #[test]
    fn close_frames_are_well_formed() {
        let f = close_frame(1000, "interrupted", false);
        assert_eq!(f[0], 0x88);
        assert_eq!(f[1] as usize, 2 + "interrupted".len());
        assert_eq!(&f[2..4], &[0x03, 0xe8]);
        assert_eq!(&f[4..], b"interrupted");
        let m = close_frame(1000, "interrupted", true);
        assert_eq!(m[1] & 0x80, 0x80);
        let mut t = FrameTracker::default();
        t.feed(&m);
        assert!(t.at_boundary());
    }
}
