use super::*;
use bytes::{Buf, Bytes};

fn len(publish: &Publish) -> usize {
    let len = 2 + publish.topic.len() + publish.payload.len();
    match publish.qos != QoS::AtMostOnce && publish.pkid != 0 {
        true => len + 2,
        _ => len,
    }
}

pub fn read(fixed_header: FixedHeader, mut bytes: Bytes) -> Result<Publish, Error> {
    let qos_num = (fixed_header.byte1 & 0b0110) >> 1;
    let qos = qos(qos_num).ok_or(Error::InvalidQoS(qos_num))?;
    let dup = (fixed_header.byte1 & 0b1000) != 0;
    let retain = (fixed_header.byte1 & 0b0001) != 0;

    let variable_header_index = fixed_header.fixed_header_len;
    bytes.advance(variable_header_index);
    let topic = read_mqtt_bytes(&mut bytes)?;

    // Packet identifier exists where QoS > 0
    let pkid = match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce | QoS::ExactlyOnce => read_u16(&mut bytes)?,
    };

    if qos != QoS::AtMostOnce && pkid == 0 {
        return Err(Error::PacketIdZero);
    }

    let publish = Publish {
        dup,
        retain,
        qos,
        pkid,
        topic,
        payload: bytes,
    };

    Ok(publish)
}

pub fn write(publish: &Publish, buffer: &mut BytesMut) -> Result<usize, Error> {
    let len = publish.len();

    let dup = publish.dup as u8;
    let qos = publish.qos as u8;
    let retain = publish.retain as u8;
    buffer.put_u8(0b0011_0000 | retain | (qos << 1) | (dup << 3));

    let count = write_remaining_length(buffer, len)?;
    write_mqtt_bytes(buffer, &publish.topic);

    if publish.qos != QoS::AtMostOnce {
        let pkid = publish.pkid;
        if pkid == 0 {
            return Err(Error::PacketIdZero);
        }

        buffer.put_u16(pkid);
    }

    buffer.extend_from_slice(&publish.payload);

    Ok(1 + count + len)
}

/// ota patch: [`write`] without the payload, which the caller sends
/// straight from `publish.payload` (the remaining length counts it).
pub fn write_head(publish: &Publish, buffer: &mut BytesMut) -> Result<usize, Error> {
    let len = publish.len();

    let dup = publish.dup as u8;
    let qos = publish.qos as u8;
    let retain = publish.retain as u8;
    buffer.put_u8(0b0011_0000 | retain | (qos << 1) | (dup << 3));

    let count = write_remaining_length(buffer, len)?;
    write_mqtt_bytes(buffer, &publish.topic);

    if publish.qos != QoS::AtMostOnce {
        let pkid = publish.pkid;
        if pkid == 0 {
            return Err(Error::PacketIdZero);
        }

        buffer.put_u16(pkid);
    }

    Ok(1 + count + len - publish.payload.len())
}

// ota patch: the head written apart plus the payload are the packet
// `write` makes, at every QoS.
#[cfg(test)]
mod ota_patch_tests {
    use super::*;

    #[test]
    fn head_then_payload_is_the_whole_packet() {
        for (qos, pkid) in [(QoS::AtMostOnce, 0), (QoS::AtLeastOnce, 7), (QoS::ExactlyOnce, 9)] {
            for size in [0usize, 1, 127, 128, 16_384, 70_000] {
                let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
                let mut p = Publish::new(b"P/artifacts/a/blocks".to_vec(), payload.clone(), false);
                p.qos = qos;
                p.pkid = pkid;
                let mut whole = BytesMut::new();
                let n = write(&p, &mut whole).unwrap();
                let mut head = BytesMut::new();
                let h = write_head(&p, &mut head).unwrap();
                head.extend_from_slice(&payload);
                assert_eq!(head, whole, "qos {qos:?}, {size} bytes");
                assert_eq!(h + size, n);
            }
        }
    }
}
