FROM --platform=linux/sparc99 alpine
