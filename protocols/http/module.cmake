# The HTTP module's own dependency: llhttp (built above from Debian's
# node-llhttp sources).
target_link_libraries(medusa_http PUBLIC llhttp)
