# The HTTP module's own dependencies: llhttp (built above from Debian's
# node-llhttp sources) and libcrypt for the auth handler.
target_link_libraries(medusa_http PUBLIC llhttp PkgConfig::LIBCRYPT)
