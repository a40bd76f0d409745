"""jobtunnel's test suite.

unit/: pure logic; integration/: real sshd, files, sockets; e2e/: the real daemon and tray.
"""
