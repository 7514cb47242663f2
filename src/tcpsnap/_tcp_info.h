/* TCP internals of one connection: the C layout of tcpsnap/_schema.py's TCP_INFO_DTYPE
 * (checked at import by _tcp_info.pyx and by tests/test_tcp_info.py), and the parser of
 * the kernel's struct tcp_info (an INET_DIAG_INFO attribute) into it.
 *
 * The kernel's struct grew over the years (144 bytes on 4.4, 232 on 5.4-6.1, 248 on 6.7+,
 * 280 on 6.18) and a kernel sends the length it knows: fields are read by their offset in
 * include/uapi/linux/tcp.h, each only if the attribute covers it whole, else 0 (and null in
 * a recording, where _arrow.py compares each field's end with tcp_info_len). Never by
 * sizeof(struct tcp_info) of whatever header this was built against. */
#ifndef TCPSNAP_TCP_INFO_H
#define TCPSNAP_TCP_INFO_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct tcpsnap_tcp_info {
    uint64_t bytes_acked;
    uint64_t bytes_received;
    uint64_t bytes_sent;
    uint64_t bytes_retrans;
    uint64_t delivery_rate;   /* bytes/s */
    uint64_t pacing_rate;     /* bytes/s */
    uint64_t busy_time;       /* us */
    uint64_t rwnd_limited;    /* us */
    uint64_t sndbuf_limited;  /* us */
    uint32_t rtt;             /* us */
    uint32_t rttvar;          /* us */
    uint32_t min_rtt;         /* us */
    uint32_t rcv_rtt;         /* us */
    uint32_t rto;             /* us */
    uint32_t snd_cwnd;        /* segments */
    uint32_t snd_ssthresh;    /* segments */
    uint32_t snd_mss;
    uint32_t rcv_mss;
    uint32_t pmtu;
    uint32_t total_retrans;
    uint32_t retrans;
    uint32_t lost;
    uint32_t sacked;
    uint32_t unacked;
    uint32_t rcv_space;
    uint32_t notsent_bytes;
    uint32_t segs_in;
    uint32_t segs_out;
    uint32_t data_segs_in;
    uint32_t data_segs_out;
    uint32_t delivered;
    uint32_t dsack_dups;
    uint32_t reord_seen;
    uint32_t snd_wnd;
    uint32_t rcv_wnd;
    uint32_t last_data_sent;  /* ms */
    uint32_t last_data_recv;  /* ms */
    uint32_t last_ack_recv;   /* ms */
    uint32_t total_rto_time;  /* ms */
    char     congestion[16];  /* INET_DIAG_CONG (TCP_CA_NAME_MAX), NUL-padded; empty: none */
    uint16_t tcp_info_len;    /* bytes of struct tcp_info sent for this row (capped); 0: none */
    uint16_t total_rto;
    uint8_t  ca_state;
    uint8_t  backoff;
    uint8_t  retransmits;
    uint8_t  estats;          /* Windows: ESTATS_DATA | ESTATS_PATH filled the row; 0 on Linux */
} tcpsnap_tcp_info;

/* The longest struct tcp_info known (Linux 6.18); longer ones are counted by the caller. */
#define TCPSNAP_TCP_INFO_KNOWN 280

/* Every field read from struct tcp_info: X(field, offset in the kernel's struct, size).
 * The one list the parser and the layout check (tcp_info_layout()) are built from. */
#define TCPSNAP_TCP_INFO_KERNEL(X) \
    X(ca_state, 1, 1) X(retransmits, 2, 1) X(backoff, 4, 1) \
    X(rto, 8, 4) X(snd_mss, 16, 4) X(rcv_mss, 20, 4) \
    X(unacked, 24, 4) X(sacked, 28, 4) X(lost, 32, 4) X(retrans, 36, 4) \
    X(last_data_sent, 44, 4) X(last_data_recv, 52, 4) X(last_ack_recv, 56, 4) \
    X(pmtu, 60, 4) X(rtt, 68, 4) X(rttvar, 72, 4) X(snd_ssthresh, 76, 4) X(snd_cwnd, 80, 4) \
    X(rcv_rtt, 92, 4) X(rcv_space, 96, 4) X(total_retrans, 100, 4) \
    X(pacing_rate, 104, 8) X(bytes_acked, 120, 8) X(bytes_received, 128, 8) \
    X(segs_out, 136, 4) X(segs_in, 140, 4) \
    X(notsent_bytes, 144, 4) X(min_rtt, 148, 4) X(data_segs_in, 152, 4) X(data_segs_out, 156, 4) \
    X(delivery_rate, 160, 8) X(busy_time, 168, 8) X(rwnd_limited, 176, 8) X(sndbuf_limited, 184, 8) \
    X(delivered, 192, 4) X(bytes_sent, 200, 8) X(bytes_retrans, 208, 8) \
    X(dsack_dups, 216, 4) X(reord_seen, 220, 4) X(snd_wnd, 228, 4) \
    X(rcv_wnd, 232, 4) X(total_rto, 240, 2) X(total_rto_time, 244, 4)

/* Parse an INET_DIAG_INFO payload of `length` bytes into *out (every tcp_info field;
 * congestion and estats are left alone). Fields the payload does not cover whole are 0. */
static inline void tcp_info_from_attr(const uint8_t *data, size_t length, tcpsnap_tcp_info *out)
{
#define TCPSNAP_TI_ALL(f, off, n) memcpy(&out->f, data + (off), (n));
#define TCPSNAP_TI_SOME(f, off, n) \
    if (length >= (size_t)(off) + (n)) memcpy(&out->f, data + (off), (n)); else out->f = 0;
    if (length >= TCPSNAP_TCP_INFO_KNOWN) {
        TCPSNAP_TCP_INFO_KERNEL(TCPSNAP_TI_ALL)      /* the common case: no test per field */
    } else {
        TCPSNAP_TCP_INFO_KERNEL(TCPSNAP_TI_SOME)
    }
#undef TCPSNAP_TI_ALL
#undef TCPSNAP_TI_SOME
    out->tcp_info_len = length > 0xFFFF ? 0xFFFF : (uint16_t)length;
}

/* Parse an INET_DIAG_CONG payload (the algorithm's name, NUL-terminated) into
 * out->congestion, NUL-padded; a name longer than 15 bytes is cut (TCP_CA_NAME_MAX = 16). */
static inline void tcp_info_cong(const uint8_t *data, size_t length, tcpsnap_tcp_info *out)
{
    size_t i;
    if (length > sizeof(out->congestion) - 1)
        length = sizeof(out->congestion) - 1;
    for (i = 0; i < length && data[i] != 0; i++)
        out->congestion[i] = (char)data[i];
    memset(out->congestion + i, 0, sizeof(out->congestion) - i);
}

/* Windows: GetPerTcpConnectionEStats' read-only dynamic structs (tcpestats.h, Microsoft's
 * documentation), version 0, little-endian with natural alignment on x86 and x64:
 * TCP_ESTATS_DATA_ROD_v0 is 96 bytes (six ULONG64, five ULONG, a ULONG64 at 72, a ULONG,
 * a ULONG64 at 88), TCP_ESTATS_PATH_ROD_v0 forty ULONGs (160 bytes). */
#define TCPSNAP_ESTATS_DATA_ROD_SIZE 96
#define TCPSNAP_ESTATS_PATH_ROD_SIZE 160
#define TCPSNAP_ESTATS_DATA 1
#define TCPSNAP_ESTATS_PATH 2

static inline uint64_t tcpsnap_le64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t tcpsnap_le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
/* ms (ESTATS) -> us (tcp_info), saturating: ULONG_MAX ms ("no sample") stays the maximum */
static inline uint32_t tcpsnap_ms_us(uint32_t ms) { return ms >= 4294967u ? 0xFFFFFFFFu : ms * 1000u; }

/* One connection's Data and Path structs (either may be NULL or short: then not read)
 * -> *out, zeroed first; out->estats says which were read, tcp_info_len stays 0. What the
 * fields mean is as on Linux, but counted since collection was enabled for the connection
 * (SetPerTcpConnectionEStats), not since it opened. */
static inline void tcp_info_from_estats(const uint8_t *data, size_t dlen, const uint8_t *path, size_t plen,
                                        tcpsnap_tcp_info *out)
{
    uint32_t rto;
    memset(out, 0, sizeof(*out));
    if (data != NULL && dlen >= TCPSNAP_ESTATS_DATA_ROD_SIZE) {
        out->bytes_sent = tcpsnap_le64(data + 0);                 /* DataBytesOut */
        out->data_segs_out = (uint32_t)tcpsnap_le64(data + 8);    /* DataSegsOut */
        out->data_segs_in = (uint32_t)tcpsnap_le64(data + 24);    /* DataSegsIn */
        out->segs_out = (uint32_t)tcpsnap_le64(data + 32);        /* SegsOut */
        out->segs_in = (uint32_t)tcpsnap_le64(data + 40);         /* SegsIn */
        out->bytes_acked = tcpsnap_le64(data + 72);               /* ThruBytesAcked */
        out->bytes_received = tcpsnap_le64(data + 88);            /* ThruBytesReceived */
        out->estats |= TCPSNAP_ESTATS_DATA;
    }
    if (path != NULL && plen >= TCPSNAP_ESTATS_PATH_ROD_SIZE) {
        uint32_t timeouts = tcpsnap_le32(path + 4) + tcpsnap_le32(path + 8);  /* Timeouts + Subsequent */
        uint32_t cur = tcpsnap_le32(path + 12);                   /* CurTimeoutCount */
        out->total_rto = timeouts > 0xFFFF ? 0xFFFF : (uint16_t)timeouts;
        out->retransmits = cur > 0xFF ? 0xFF : (uint8_t)cur;
        out->total_retrans = tcpsnap_le32(path + 20);             /* PktsRetrans */
        out->bytes_retrans = tcpsnap_le32(path + 24);             /* BytesRetrans */
        out->dsack_dups = tcpsnap_le32(path + 100);               /* DsackDups */
        out->rtt = tcpsnap_ms_us(tcpsnap_le32(path + 108));       /* SmoothedRtt, ms */
        out->rttvar = tcpsnap_ms_us(tcpsnap_le32(path + 112));    /* RttVar, ms */
        out->min_rtt = tcpsnap_ms_us(tcpsnap_le32(path + 120));   /* MinRtt, ms */
        rto = tcpsnap_le32(path + 132);                           /* CurRto, ms */
        out->rto = tcpsnap_ms_us(rto);
        out->snd_mss = tcpsnap_le32(path + 144);                  /* CurMss */
        out->estats |= TCPSNAP_ESTATS_PATH;
    }
}

/* The layout check: each field read from the kernel, where it is there and here. */
typedef struct tcpsnap_tcp_info_field {
    const char *name;
    uint16_t koff, ksize;     /* in the kernel's struct tcp_info */
    uint16_t off, size;       /* in tcpsnap_tcp_info */
} tcpsnap_tcp_info_field;

static inline const tcpsnap_tcp_info_field *tcp_info_fields(size_t *n)
{
#define TCPSNAP_TI_ENTRY(f, o, sz) \
    {#f, (o), (sz), (uint16_t)offsetof(tcpsnap_tcp_info, f), (uint16_t)sizeof(((tcpsnap_tcp_info *)0)->f)},
    static const tcpsnap_tcp_info_field fields[] = { TCPSNAP_TCP_INFO_KERNEL(TCPSNAP_TI_ENTRY) };
#undef TCPSNAP_TI_ENTRY
    *n = sizeof(fields) / sizeof(fields[0]);
    return fields;
}

#endif
