# The HTTP module's own dependency: llhttp (built above from Debian's
# node-llhttp sources).
target_link_libraries(medusa_http PUBLIC llhttp)
# The reverse proxy resolves upstream names with evdns (libevent_extra,
# from the same libevent-dev package).
medusa_require(LIBEVENT_EXTRA libevent_extra libevent-dev)
target_link_libraries(medusa_http PUBLIC PkgConfig::LIBEVENT_EXTRA)
