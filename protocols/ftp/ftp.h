/*
 * FTP (RFC 959 with FEAT/OPTS, EPSV/EPRT, SIZE/MDTM/MLST/MLSD, REST
 * STREAM and UTF-8 paths), on the module interface.
 *
 * A session is a control connection (a core connection with a
 * bufferevent) plus at most one data channel, both owned by the worker
 * that accepted the control connection: the passive listening socket, the
 * data socket and the file being sent or received are that worker's
 * descriptors, driven by its loop. Files are reached only through the
 * user's root descriptor with the core's confined open (core/fs.h).
 *
 *   ftp.c       the module: configuration, sessions, replies, the command
 *               reader, login, drain and moves, per-IP limits, figures
 *   ftp_cmd.c   the command table and every command but the transfers
 *   ftp_data.c  data channels (PASV/EPSV/PORT/EPRT), ABOR, the xferlog
 *   ftp_transfer.c  RETR, STOR/APPE/STOU, LIST/NLST/MLSD
 *   ftp_text.c  pure text work, unit-tested: command lines, virtual
 *               paths, PORT/EPRT, LIST and MLSx lines
 */
#pragma once

#include "core/module.h"

extern const struct module ftp_module;
