/* tcpestats: Windows' per-connection extended statistics (GetPerTcpConnectionEStats,
 * GetPerTcp6ConnectionEStats; enabled by SetPerTcpConnectionEStats / SetPerTcp6ConnectionEStats),
 * TcpConnectionEstatsData and TcpConnectionEstatsPath, version 0.
 *
 * The four calls are resolved at run time (GetProcAddress on iphlpapi.dll), never linked: an
 * iphlpapi.dll without them (Wine 8 exports SetPerTcpConnectionEStats only) is a state that
 * tcpestats_open() reports, not a DLL that fails to load. Enabling needs elevation: a process
 * that is not elevated is another state. Plain C, no Python, no Windows header in this file
 * (Cython reads it on any platform); estats.c is built on Windows only.
 *
 * Microsoft's documentation:
 *   https://learn.microsoft.com/en-us/windows/win32/api/iphlpapi/nf-iphlpapi-getpertcpconnectionestats
 *   https://learn.microsoft.com/en-us/windows/win32/api/iphlpapi/nf-iphlpapi-setpertcpconnectionestats
 *     (ERROR_ACCESS_DENIED: "the user lacks the required administrative privileges")
 *   https://learn.microsoft.com/en-us/windows/desktop/api/Iphlpapi/nf-iphlpapi-setpertcp6connectionestats
 *   https://learn.microsoft.com/en-us/windows/win32/api/tcpestats/ns-tcpestats-tcp_estats_data_rod_v0
 *   https://learn.microsoft.com/en-us/windows/win32/api/tcpestats/ns-tcpestats-tcp_estats_path_rod_v0
 */
#ifndef TCPSNAP_ESTATS_H
#define TCPSNAP_ESTATS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum tcpestats_state {
    TCPESTATS_READY = 0,          /* the calls are there and this process is elevated */
    TCPESTATS_NO_DLL = 1,         /* iphlpapi.dll could not be loaded */
    TCPESTATS_NO_EXPORT = 2,      /* iphlpapi.dll does not export `missing` */
    TCPESTATS_NOT_ELEVATED = 3,   /* the process token is not elevated (or enabling said
                                     ERROR_ACCESS_DENIED): Windows refuses to enable collection */
    TCPESTATS_NOT_OPENED = 4      /* tcpestats_open() not called yet */
};

#define TCPESTATS_ERROR_ACCESS_DENIED 5u
#define TCPESTATS_ERROR_NOT_FOUND 1168u

/* One connection, as tcpsnap's row has it: addresses in network byte order (IPv4 in the first
 * 4 bytes), ports in host byte order. */
typedef struct tcpestats_conn {
    uint8_t family;               /* 4 or 6 */
    uint8_t local_addr[16];
    uint8_t remote_addr[16];
    uint16_t local_port, remote_port;
    uint32_t local_scope_id, remote_scope_id;
} tcpestats_conn;

/* A resolved call, cast to its prototype where called (function pointer to function pointer). */
typedef void (*tcpestats_fn)(void);

typedef struct tcpestats {
    int state;                    /* enum tcpestats_state */
    const char *missing;          /* TCPESTATS_NO_EXPORT: the first call not found */
    int v6;                       /* the IPv6 pair is there too */
    tcpestats_fn get4, set4, get6, set6;
    uint64_t enabled;             /* connections collection was enabled for */
    uint64_t reads;               /* connections whose Data or Path struct was read */
    uint64_t failures;            /* calls that failed otherwise (mostly ERROR_NOT_FOUND: closed since) */
} tcpestats_t;

/* Resolve the calls and check elevation: sets and returns e->state. */
int tcpestats_open(tcpestats_t *e);
/* Enable Data and Path collection for one connection: NO_ERROR (0) or the Windows error code
 * (ERROR_ACCESS_DENIED also sets e->state to TCPESTATS_NOT_ELEVATED). */
uint32_t tcpestats_enable(tcpestats_t *e, const tcpestats_conn *c);
/* Read the Data and Path read-only dynamic structs (TCP_ESTATS_DATA_ROD_v0 into data[96],
 * TCP_ESTATS_PATH_ROD_v0 into path[160]); *got says which were read (bit 1 Data, bit 2 Path). */
uint32_t tcpestats_read(tcpestats_t *e, const tcpestats_conn *c, uint8_t *data, size_t dlen,
                        uint8_t *path, size_t plen, int *got);

#ifdef __cplusplus
}
#endif
#endif
