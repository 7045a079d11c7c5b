# The "smaller runtime" the image could have used, for `npm run bench:image` to measure next to
# the shipped one: the same application files, node, tini and only the shared libraries they link,
# on an empty base (no shell, no apt, no package database). Not shipped: see README, "Image".
ARG UPDATER_IMAGE=processgit-updater:test
FROM ${UPDATER_IMAGE} AS full
USER root
RUN set -e; \
    mkdir -p /rootfs/tmp /rootfs/etc /rootfs/var/lib; chmod 1777 /rootfs/tmp; \
    for f in /usr/local/bin/node /usr/bin/tini; do \
      cp --parents "$f" /rootfs; \
      ldd "$f" | awk '/=>/ { print $3 } /ld-linux/ { print $1 }' | xargs -I{} cp -L --parents {} /rootfs; \
    done; \
    cp -a --parents /app /var/lib/processgit-updater /rootfs; \
    grep -E '^(root|updater):' /etc/passwd > /rootfs/etc/passwd; \
    grep -E '^(root|updater):' /etc/group > /rootfs/etc/group

FROM scratch
COPY --from=full /rootfs /
ENV PATH=/usr/local/bin:/usr/bin \
    NODE_ENV=production \
    PROCESSGIT_UPDATER_STATE_DIR=/var/lib/processgit-updater \
    PROCESSGIT_UPDATER_SNAPSHOT_DIR=/var/lib/processgit-updater/snapshots \
    PROCESSGIT_UPDATER_LISTEN=0.0.0.0:9000
USER 10001:10001
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "/app/dist/src/healthcheck.js"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "/app/dist/src/main.js"]
