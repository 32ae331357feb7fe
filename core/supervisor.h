/*
 * The supervisor: the main thread. It owns the configuration, the signals,
 * systemd notification, the listening sockets' life cycle and the workers'
 * life cycle, and decides; workers carry decisions out through the bus.
 */
#pragma once

/* Runs the server until it is stopped; returns the process exit status. */
int supervisor_run(const char *config_path, int workers_override);
