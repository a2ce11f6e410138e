FROM debian
RUN apt-get update && apt-get install -y \
    # tools for the build
    make \
    # and the compiler

    gcc \
    && echo done
