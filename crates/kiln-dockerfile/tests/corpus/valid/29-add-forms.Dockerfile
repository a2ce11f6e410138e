FROM alpine
ADD --chown=1000:1000 --chmod=0755 https://example.com/tool /usr/local/bin/tool
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/archive.tar.gz /opt/
ADD --keep-git-dir=true https://github.com/moby/buildkit.git#v0.13.0 /src/buildkit
ADD --link --exclude=*.md rootfs.tar.xz /
ADD --unpack=false data.tar.gz /data/
