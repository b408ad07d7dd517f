/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Smartcards for tests, made of real parts: a private pcscd with the vsmartcard vpcd
 * reader driver, and the vicc virtual card that "inserts" itself by connecting to vpcd.
 *
 * pcscd 1.9 listens on /run/pcscd/pcscd.comm and removes that file when it stops, whatever
 * socket it was given. So the test's pcscd gets its socket from us (systemd socket
 * activation: LISTEN_FDS, a socket in the fixture directory that PCSCLITE_CSOCK_NAME names
 * for every client) and runs in a mount namespace of its own with a private /run/pcscd
 * (unshare -m as root, unshare -rm otherwise): a pcscd of the machine, if any, is never
 * touched. Its reader.conf is private too: vpcd on a free TCP port, two readers
 * "Virtual PCD 00 00" (the card's) and "Virtual PCD 00 01".
 *
 * Every function skips the test (TAP SKIP with the reason) when a part is missing, and
 * bails out when a part misbehaves. Children die with the test (PR_SET_PDEATHSIG).
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* The reader vicc's card goes into. */
#define MKT_VPCD_READER "Virtual PCD 00 00"

/*
 * The path of the private pcscd's socket, set as PCSCLITE_CSOCK_NAME for this process and
 * its children. libpcsclite reads that name once per process: call this before the first
 * PC/SC call when pcscd is started later.
 */
const char *mkt_pcscd_socket(void);

/*
 * Starts the private pcscd and waits until it lists the vpcd readers (10 s at most). Sets
 * PCSCLITE_CSOCK_NAME for this process and its children. Skips when pcscd, the vpcd driver
 * or unshare is missing, or no private /run/pcscd can be had.
 */
void mkt_pcscd_start(void);

/* Stops it (SIGTERM, wait). The socket file stays: clients then see no pcscd. */
void mkt_pcscd_stop(void);

/* Whether a card is in MKT_VPCD_READER, as pcscd says (a PC/SC client of our own). */
bool mkt_pcsc_card_present(void);

/* Skips the test unless vicc, its Python package and pycryptodome are installed. */
void mkt_vicc_check(void);

/*
 * Starts vicc (-t iso7816) on vpcd's port and waits until pcscd reports the card in
 * MKT_VPCD_READER (20 s). Skips when vicc, its Python package or pycryptodome is missing.
 */
void mkt_vicc_insert(void);

/* Stops vicc and waits until pcscd reports the reader empty (20 s). */
void mkt_vicc_remove(void);

/* OpenSC's PKCS#11 module, or skips when OpenSC is not installed. */
const char *mkt_opensc_module(void);
